"""What the run inspector shows, computed from rows: the failure summary, each node's details
(input, output, error, redacted), waits, durations and short ids. No request handling here."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from executions.admin.graphs import STATUS_COLOURS
from executions.credentials import redaction
from executions.credentials.services import credential_references, credential_resolve
from executions.graph import Graph
from executions.nodes.base import NodeError
from executions.states import NODE_ACTIVE, ExecutionStatus, NodeRunStatus

N = NodeRunStatus
NOT_REACHED = "not reached"
# Keys whose values are masked in what the inspector shows, whatever resolved them: an input
# typed by a caller or a header echoed by a server is not known to the credential store.
SECRET_KEYS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "password",
        "passwd",
        "secret",
        "token",
        "access_token",
        "refresh_token",
        "api_key",
        "apikey",
        "x-api-key",
        "client_secret",
        "cookie",
        "set-cookie",
    }
)


def inline_svg(svg: str) -> SafeString:
    # Inline in the HTML page: the XML declaration belongs to standalone files only. The SVG
    # is built by executions.admin.graphs, which escapes every text and attribute from data.
    if svg.startswith("<?xml"):
        svg = svg.split("?>", 1)[1].lstrip()
    return mark_safe(svg)  # noqa: S308


def status_badge(status: str) -> str:
    colour = STATUS_COLOURS.get(status, STATUS_COLOURS["none"])
    return format_html(
        '<span class="wc-badge" style="background:{};border:1px solid #9ca3af;border-radius:8px;'
        'padding:1px 8px;white-space:nowrap;color:#111827">{}</span>',
        colour,
        status,
    )


def is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def flatten_errors(errors: Any, where: str = "") -> list[tuple[str, str]]:
    """DRF's nested error structure as (``nodes[1].key``, message) pairs, all of them."""
    out: list[tuple[str, str]] = []
    if isinstance(errors, Mapping):
        for key, value in errors.items():
            if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
                out += flatten_errors(value, f"{where}[{key}]")
                continue
            name = "" if key == "non_field_errors" else str(key)
            out += flatten_errors(value, f"{where}.{name}" if where and name else where or name)
    elif isinstance(errors, list | tuple):
        if all(isinstance(e, str) for e in errors):
            out += [(where or "document", str(e)) for e in errors]
        else:
            for i, value in enumerate(errors):
                if value:
                    out += flatten_errors(value, f"{where}[{i}]")
    elif errors:
        out.append((where or "document", str(errors)))
    return out


def short_id(value: object) -> str:
    return str(value)[:8]


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def fmt_time(value: datetime | None) -> str:
    return timezone.localtime(value).strftime("%H:%M:%S") if value else ""


def fmt_datetime(value: datetime | None) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


# --- redaction ------------------------------------------------------------------------------


def _mask_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            k: (redaction.MASK if str(k).lower() in SECRET_KEYS and v else _mask_keys(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_mask_keys(v) for v in value]
    return value


def redactor(*, owner_id: int, graph_doc: Mapping[str, Any]) -> Callable[[Any], Any]:
    """A function that hides, in a value shown to a person, the values of every credential the
    workflow's nodes name (in all their wire forms) and the values of secret-looking keys.
    What the runner stored is already redacted; this also covers inputs and old rows."""
    names: set[str] = set()
    for n in graph_doc.get("nodes") or []:
        names |= credential_references(n.get("config") or {})
    with redaction.scope() as secrets:
        for name in sorted(names):
            try:
                credential_resolve(owner_id=owner_id, name=name)
            except NodeError:
                pass  # deleted or unreadable: nothing of it to hide

    def redact(value: Any) -> Any:
        return _mask_keys(secrets.redact(value))

    return redact


# --- what failed ----------------------------------------------------------------------------


def root_message(error: Any, output: Any) -> tuple[str, str]:
    """(type, message) of a node run's failure: for an error *output* (an HTTP 404 answer, a
    node returning ``{"error": ...}``) the output says what went wrong, not the wrapper."""
    error = error if isinstance(error, Mapping) else {}
    kind = str(error.get("type") or "Error")
    message = str(error.get("message") or "")
    if kind == "ErrorOutput" and isinstance(output, Mapping):
        status = output.get("statusCode", output.get("status_code"))
        detail = output.get("message") or output.get("error")
        if isinstance(detail, Mapping):
            detail = detail.get("message") or json.dumps(detail)[:300]
        if status is not None:
            kind = f"HTTP {status}"
            body = output.get("body")
            text = detail if isinstance(detail, str) else ""
            if not text and body is not None:
                text = body if isinstance(body, str) else json.dumps(body, default=str)
            message = f"status {status}" + (f": {text[:300]}" if text else "")
        elif isinstance(detail, str) and detail:
            message = detail
        elif output.get("status") == "failed" or output.get("success") is False:
            message = json.dumps(output, default=str)[:300]
    return kind, message


def failure_summary(execution, runs: Iterable[Any]) -> dict[str, Any] | None:
    """What a person needs first on a failed, timed-out or cancelled run: the node, the error
    type, the real message, the attempts and the waits between them."""
    if execution.status not in (
        ExecutionStatus.FAILED,
        ExecutionStatus.TIMED_OUT,
        ExecutionStatus.CANCELLED,
    ):
        return None
    runs = list(runs)
    by_node = {r.node: r for r in runs}
    error = execution.error if isinstance(execution.error, Mapping) else {}
    culprit = by_node.get(error.get("node")) if error.get("node") else None
    if culprit is None and execution.status == ExecutionStatus.FAILED:
        failed = [r for r in runs if r.status == N.FAILED and r.finished_at]
        culprit = max(failed, key=lambda r: r.finished_at) if failed else None
    if culprit is None and execution.status != ExecutionStatus.FAILED:
        # Timed out or cancelled: the node(s) that were in progress when it stopped.
        started = [r for r in runs if r.status == N.CANCELLED and r.started_at]
        culprit = max(started, key=lambda r: r.started_at) if started else None
    summary: dict[str, Any] = {
        "status": execution.status,
        "node": culprit.node if culprit else error.get("node"),
        "node_type": culprit.node_type if culprit else "",
        "type": str(error.get("type") or ""),
        "message": str(error.get("message") or ""),
        "attempts": culprit.attempts if culprit else None,
        "waits": list(culprit.retry_delays or []) if culprit else [],
    }
    if execution.status == ExecutionStatus.FAILED and culprit is not None:
        detail = error.get("detail") if isinstance(error.get("detail"), Mapping) else None
        kind, message = root_message(detail or culprit.error, culprit.output)
        summary["type"], summary["message"] = kind, message
        if detail and detail.get("attempts"):
            summary["attempts"] = detail["attempts"]
    elif execution.status == ExecutionStatus.TIMED_OUT:
        summary["type"] = summary["type"] or "Timeout"
        if culprit is not None:
            summary["message"] = (
                f"{summary['message']} while node {culprit.node!r} was running"
                if summary["message"]
                else f"node {culprit.node!r} was running at the deadline"
            )
    if culprit is not None and culprit.error and execution.status != ExecutionStatus.FAILED:
        kind, message = root_message(culprit.error, culprit.output)
        summary["last_error"] = f"{kind}: {message}"
    return summary


# --- waits ----------------------------------------------------------------------------------


def waiting_for(run, now: datetime | None = None) -> str:
    """Why an unfinished node run is not running now, and when it resumes: a retry backoff, a
    rate limit (Retry-After), a delay or an event (a sub-workflow), or a free worker."""
    if run.status not in NODE_ACTIVE or run.status == N.RUNNING:
        return ""
    now = now or timezone.now()
    due = run.next_attempt_at
    when = f" until {fmt_time(due)}" if due and due > now else ""
    if run.status == N.RETRYING:
        error = run.error if isinstance(run.error, Mapping) else {}
        if error.get("type") == "HttpError" and error.get("statusCode") in (429, 503):
            return f"rate limit (Retry-After){when}"
        return f"retry backoff{when}"
    if run.status == N.QUEUED:
        state = run.state if isinstance(run.state, Mapping) else {}
        if "child" in state:
            return f"event: sub-workflow {short_id(state['child'])} to finish{when}"
        if "until" in state:
            return f"delay{when}"
        return "waiting for a worker" + when
    if run.status == N.PENDING:
        return "waiting for its predecessors"
    return ""


def node_order(graph_doc: Mapping[str, Any]) -> list[str]:
    """Nodes in graph order (topological, document order between equals)."""
    try:
        return Graph.from_snapshot(graph_doc).topological_order()
    except Exception:  # a snapshot written some other way: fall back to document order
        return [n["key"] for n in graph_doc.get("nodes") or [] if "key" in n]


def display_status(run, execution_status: str) -> str:
    """A node that never ran because the execution stopped first reads "not reached"."""
    if run.status in (N.CANCELLED, N.PENDING) and not run.started_at:
        if execution_status in (
            ExecutionStatus.FAILED,
            ExecutionStatus.TIMED_OUT,
            ExecutionStatus.CANCELLED,
        ):
            return NOT_REACHED
    return run.status
