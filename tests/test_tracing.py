"""OpenTelemetry: one trace per execution, continued from an incoming traceparent; a span per
node run attempt; the http_request call as a child span that sends traceparent; a
sub-workflow's runs nested under its parent node. Spans go to the SDK's in-memory exporter.

The test drives the engine in this process: it runs in the test's transaction, so the
after-commit sends never happen and each node run is executed here by the real
``weconnect.run_node`` task body (the worker never sees these executions). Without any OTel
setting, nothing of OpenTelemetry is even imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db.models import Q
from django.utils import timezone
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from executions.models import Execution, NodeRun
from executions.tasks import run_node
from tests.support.workflows import edge, make_workflow, node
from weconnect import tracing

pytestmark = pytest.mark.django_db  # one transaction: nothing is dispatched to a worker

ROOT = Path(__file__).resolve().parent.parent
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def spans():
    exporter = InMemorySpanExporter()
    assert tracing.configure("weconnect-test", exporter=exporter)
    yield exporter
    tracing.shutdown()


def run_queued(execution: Execution) -> list[str]:
    """Run the execution's due node runs until none is left; their outcomes."""
    outcomes = []
    while True:
        due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=timezone.now())
        run = (
            NodeRun.objects.filter(due, execution=execution, status="queued").order_by("id").first()
        )
        if run is None:
            return outcomes
        # The task's own body, as a worker calls it (without the worker's signals, which would
        # close this test's connection and its open transaction).
        run_node.push_request(id=run.task_id, delivery_info={})
        try:
            outcomes.append(run_node.run(str(execution.id), run.node))
        finally:
            run_node.pop_request()


def by_name(exporter, name: str):
    found = [s for s in exporter.get_finished_spans() if s.name == name]
    assert found, [s.name for s in exporter.get_finished_spans()]
    return found


def test_api_trigger_continues_the_callers_trace_through_every_node_run(
    spans, api, user, http_server
):
    spans.clear()
    wf = make_workflow(
        user,
        [
            node("start"),
            node(
                "call",
                "http_request",
                config={"method": "GET", "url": http_server.url("/echo")},
                retry={"max_retries": 0},
            ),
        ],
        [edge("start", "call")],
    )
    response = api.post(
        f"/api/workflows/{wf.id}/execute/",
        {"input": {"n": 1}},
        format="json",
        HTTP_TRACEPARENT=f"00-{TRACE_ID}-{CALLER_SPAN}-01",
    )
    assert response.status_code == 202, response.content
    execution = Execution.objects.get(id=response.json()["id"])
    assert execution.trace_context["traceparent"].split("-")[1] == TRACE_ID
    assert run_queued(execution) == ["succeeded", "succeeded"]

    request = [s for s in spans.get_finished_spans() if s.kind.name == "SERVER"]
    assert request and request[0].context.trace_id == int(TRACE_ID, 16)
    assert request[0].parent.span_id == int(CALLER_SPAN, 16)
    (root,) = by_name(spans, "execution")
    assert root.parent.span_id == request[0].context.span_id
    assert root.attributes["weconnect.workflow.id"] == str(wf.id)
    assert root.attributes["weconnect.trigger"] == "api"
    for key, node_type in (("start", "noop"), ("call", "http_request")):
        (span,) = by_name(spans, f"node {key}")
        assert span.context.trace_id == int(TRACE_ID, 16)
        assert span.parent.span_id == root.context.span_id
        assert dict(span.attributes) == {
            "weconnect.execution.id": str(execution.id),
            "weconnect.node": key,
            "weconnect.workflow.id": str(wf.id),
            "weconnect.node.type": node_type,
            "weconnect.attempt": 1,
            "weconnect.status": "succeeded",
        }
    (call,) = by_name(spans, "node call")
    client = [
        s
        for s in spans.get_finished_spans()
        if s.kind.name == "CLIENT" and s.parent and s.parent.span_id == call.context.span_id
    ]
    assert len(client) == 1, [(s.name, s.kind) for s in spans.get_finished_spans()]
    # The remote end received traceparent naming the client span as its parent.
    sent = http_server.requests[-1]["headers"]["traceparent"]
    _, trace_id, parent_id, _ = sent.split("-")
    assert trace_id == TRACE_ID and int(parent_id, 16) == client[0].context.span_id


def test_failed_attempts_are_spans_with_their_status(spans, user):
    spans.clear()
    from executions.services.executions import execution_create

    wf = make_workflow(
        user,
        [
            node(
                "flaky",
                "test_behave",
                config={"fail_attempts": 1},
                retry={"max_retries": 1, "backoff_seconds": 0},
            )
        ],
    )
    execution, _ = execution_create(workflow=wf, input={})
    assert run_queued(execution)[:1] == ["retrying"]
    NodeRun.objects.filter(execution=execution).update(status="queued", next_attempt_at=None)
    run_queued(execution)
    attempts = sorted(
        (
            s.attributes["weconnect.attempt"],
            s.attributes["weconnect.status"],
            s.status.status_code.name,
        )
        for s in by_name(spans, "node flaky")
    )
    assert attempts == [(1, "retrying", "ERROR"), (2, "succeeded", "UNSET")]
    # No request around it: the execution span starts the trace, every attempt is in it.
    (root,) = by_name(spans, "execution")
    assert root.parent is None
    assert {s.context.trace_id for s in by_name(spans, "node flaky")} == {root.context.trace_id}


def test_a_sub_workflow_nests_under_its_parent_node(spans, user):
    spans.clear()
    from executions.services.executions import execution_create

    child = make_workflow(user, [node("inner")], name="child")
    parent = make_workflow(
        user, [node("sub", "sub_workflow", config={"workflow": str(child.id)})], name="parent"
    )
    execution, _ = execution_create(workflow=parent, input={})
    assert run_queued(execution) == ["waiting"]
    kid = Execution.objects.get(workflow=child)
    assert run_queued(kid) == ["succeeded"]

    (sub,) = by_name(spans, "node sub")
    roots = {s.attributes["weconnect.workflow.id"]: s for s in by_name(spans, "execution")}
    assert roots[str(child.id)].parent.span_id == sub.context.span_id
    (inner,) = by_name(spans, "node inner")
    assert inner.parent.span_id == roots[str(child.id)].context.span_id
    assert inner.context.trace_id == sub.context.trace_id == roots[str(parent.id)].context.trace_id


def test_for_each_children_nest_under_their_parent_node(spans, user):
    spans.clear()
    from executions.services.executions import execution_create

    child = make_workflow(user, [node("inner")], name="item")
    parent = make_workflow(
        user,
        [
            node(
                "loop",
                "for_each",
                config={"items": [1, 2, 3], "workflow": str(child.id), "concurrency": 3},
            )
        ],
        name="parent",
    )
    execution, _ = execution_create(workflow=parent, input={})
    assert run_queued(execution) == ["waiting"]
    kids = list(Execution.objects.filter(workflow=child).order_by("item_index"))
    assert len(kids) == 3
    for kid in kids:
        assert run_queued(kid) == ["succeeded"]

    (loop,) = by_name(spans, "node loop")
    roots = [
        s
        for s in by_name(spans, "execution")
        if s.attributes["weconnect.workflow.id"] == str(child.id)
    ]
    assert len(roots) == 3
    assert {r.parent.span_id for r in roots} == {loop.context.span_id}
    assert {s.context.trace_id for s in by_name(spans, "node inner")} == {loop.context.trace_id}


def test_without_otel_settings_nothing_is_loaded():
    """No tracing SDK, exporter or instrumentation is imported, no middleware added. (redis-py
    imports the OpenTelemetry API and the metrics SDK by itself when they are installed; that
    is not WeConnect's tracing and exports nothing.)"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["DJANGO_SETTINGS_MODULE"] = "weconnect.settings"
    script = (
        "import json, sys, django; django.setup(); import weconnect.wsgi, executions.tasks; "
        "from django.conf import settings; from weconnect import tracing; "
        "loaded = sorted(m for m in sys.modules if m.startswith(("
        "'opentelemetry.sdk.trace', 'opentelemetry.instrumentation', 'opentelemetry.exporter'"
        "))); "
        "print(json.dumps([tracing.enabled(), loaded, "
        "[m for m in settings.MIDDLEWARE if 'opentelemetry' in m]]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [False, [], []]


def test_with_an_otlp_endpoint_a_web_process_is_instrumented():
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        DJANGO_SETTINGS_MODULE="weconnect.settings",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
        OTEL_SERVICE_NAME="weconnect-probe",
    )
    script = (
        "import json, django; django.setup(); import weconnect.wsgi; "
        "from django.conf import settings; from weconnect import tracing; "
        "from opentelemetry import trace; "
        "r = trace.get_tracer_provider().resource.attributes; "
        "print(json.dumps([tracing.enabled(), r.get('service.name'), "
        "any('opentelemetry' in m for m in settings.MIDDLEWARE)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [True, "weconnect-probe", True]


@pytest.mark.parametrize(
    "environ,expected",
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
    ],
)
def test_which_settings_turn_tracing_on(environ, expected):
    assert tracing.wanted(environ) is expected
