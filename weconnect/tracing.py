"""OpenTelemetry tracing, loaded only when it is configured.

With ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, or
``OTEL_TRACES_EXPORTER=otlp|console``) set, each process sets up the SDK at start (web: wsgi.py
and asgi.py; worker: every pool process, after the fork; Beat: at its start) and instruments
Django, Celery and httpx. Without them nothing of OpenTelemetry is imported, and every hook
below is one test of a module global: nothing is slower.

What a trace holds (docs/operations.md#tracing):
- one trace per execution: creating an execution records a short ``execution`` span, a child
  of whatever is current (the API or webhook request, which continues an incoming
  ``traceparent``; the scheduled trigger's task; the node run of a sub-workflow's parent), and
  stores its context on the execution;
- a ``node <key>`` span per node run attempt, a child of that stored context wherever the
  attempt runs, with the workflow, execution, node, type, attempt and status;
- inside it, the http_request node's call as an httpx client span, which sends
  ``traceparent`` on the request, and any execution the node creates (a sub-workflow's child).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_EXPORTERS = ("otlp", "console")

# Set by configure(); None means tracing is off in this process.
_tracer: Any = None
_provider: Any = None


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces, by the standard OTel variables."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return exporter in _EXPORTERS or any(environ.get(k, "").strip() for k in _ENDPOINTS)


def enabled() -> bool:
    return _tracer is not None


def _exporter_from_environment():
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    # OTLP over HTTP/protobuf; reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, _TIMEOUT.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def configure(service_name: str, *, exporter: Any = None) -> bool:
    """Set up tracing for this process when the environment asks for it (or an ``exporter``
    is given, as tests do: spans are then exported one by one). Returns whether it is on."""
    global _tracer, _provider
    if _tracer is not None:
        return True
    if exporter is None and not wanted():
        return False
    from opentelemetry import trace
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    if exporter is None:
        provider.add_span_processor(BatchSpanProcessor(_exporter_from_environment()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    # Django: a server span per request, continuing an incoming traceparent (it adds its
    # middleware to settings.MIDDLEWARE, so this runs before the WSGI handler is built).
    DjangoInstrumentor().instrument(tracer_provider=provider)
    # Celery: the context travels in the message headers from sender to task.
    CeleryInstrumentor().instrument(tracer_provider=provider)
    # httpx: a client span per request, with traceparent sent on it.
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    _provider, _tracer = provider, provider.get_tracer("weconnect")
    return True


def shutdown() -> None:
    """Export what is pending and stop tracing in this process (process exit, tests)."""
    global _tracer, _provider
    if _provider is None:
        return
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    for instrumentor in (DjangoInstrumentor(), CeleryInstrumentor(), HTTPXClientInstrumentor()):
        instrumentor.uninstrument()
    _provider.force_flush()
    _provider.shutdown()
    _tracer = _provider = None


def flush() -> None:
    if _provider is not None:
        _provider.force_flush()


def execution_trace(*, workflow_id: Any, trigger: str) -> dict[str, str] | None:
    """The trace context to store on a new execution (None when tracing is off): a short
    ``execution`` span, child of the current span if any, that every node run's span hangs
    under."""
    if _tracer is None:
        return None
    from opentelemetry.propagate import inject

    attributes = {"weconnect.workflow.id": str(workflow_id), "weconnect.trigger": str(trigger)}
    with _tracer.start_as_current_span("execution", attributes=attributes):
        carrier: dict[str, str] = {}
        inject(carrier)
    return carrier


_OFF = contextlib.nullcontext()


def node_run_span(
    *, execution_id: str, node: str, parent: Mapping[str, str] | None
) -> contextlib.AbstractContextManager[Any]:
    """The span of one node run attempt, current while it runs; ``parent`` is the context
    stored on the execution (the current context when there is none). With tracing off, a
    shared no-op context manager (it yields None): nothing is created per node run."""
    if _tracer is None:
        return _OFF
    return _node_run_span(execution_id=execution_id, node=node, parent=parent)


@contextlib.contextmanager
def _node_run_span(
    *, execution_id: str, node: str, parent: Mapping[str, str] | None
) -> Iterator[Any]:
    from opentelemetry.propagate import extract

    context = extract(dict(parent)) if parent else None
    attributes = {"weconnect.execution.id": str(execution_id), "weconnect.node": node}
    with _tracer.start_as_current_span(
        f"node {node}", context=context, attributes=attributes
    ) as span:
        yield span


def annotate_node_run(*, workflow_id: Any, node_type: str, attempt: int) -> None:
    """Adds what the engine learns once it claimed the run to the current node run's span."""
    if _tracer is None:
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    span.set_attribute("weconnect.workflow.id", str(workflow_id))
    span.set_attribute("weconnect.node.type", node_type)
    span.set_attribute("weconnect.attempt", int(attempt))


def node_run_outcome(span: Any, status: str) -> None:
    """The word the engine returned for the attempt: succeeded, failed, retrying, waiting,
    skipped (a duplicate message) or discarded (the run was no longer ours)."""
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("weconnect.status", status)
    if status in ("failed", "retrying"):
        span.set_status(Status(StatusCode.ERROR, f"node run {status}"))
