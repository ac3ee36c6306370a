"""Webhooks: start an execution from an HTTP POST authenticated by the workflow's secret token.

The token is the only credential, so every way of failing it (unknown workflow, webhooks
off, wrong or missing token) looks the same from outside, and the comparison takes the same
time whatever the token's prefix (hmac.compare_digest, also against a dummy when there is no
workflow to compare with).
"""

from __future__ import annotations

import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from executions.engine.notify import finished_event
from executions.errors import Conflict
from executions.models import Execution, NodeRun, Workflow
from executions.states import EXECUTION_TERMINAL, ExecutionStatus, Trigger, WebhookRespond
from executions.triggers.debounce import Triggered, trigger_execution

_DUMMY_TOKEN = Workflow.new_webhook_token()


class WebhookNotFound(Exception):
    """Unknown workflow, webhooks disabled, or a wrong token (answered as 404)."""


def webhook_workflow(*, workflow_id: str, token: str | None) -> Workflow:
    """The workflow whose webhook ``token`` opens, or WebhookNotFound."""
    try:
        pk = uuid.UUID(str(workflow_id))
    except ValueError:
        pk = None
    workflow = Workflow.objects.filter(id=pk, webhook_enabled=True).first() if pk else None
    expected = (
        workflow.webhook_token if workflow is not None and workflow.webhook_token else _DUMMY_TOKEN
    )
    matches = hmac.compare_digest((token or "").encode(), expected.encode())
    if workflow is None or not workflow.webhook_token or not matches:
        raise WebhookNotFound()
    return workflow


def webhook_trigger(
    *, workflow_id: str, token: str | None, input: Any, idempotency_key: str | None = None
) -> Triggered:
    """Start an execution of the workflow with ``input`` (trigger ``webhook``), or join its
    open debounce window. Raises WebhookNotFound, Conflict when the workflow is inactive, or
    DebounceKeyError."""
    workflow = webhook_workflow(workflow_id=workflow_id, token=token)
    return trigger_execution(
        workflow=workflow, input=input, trigger=Trigger.WEBHOOK, idempotency_key=idempotency_key
    )


# --- answering with the result ---------------------------------------------------------------

# An execution that ended this way answers with this status code (unless the respond node
# set one): the request failed on the server's side, took too long, or was stopped.
FAILURE_STATUS = {
    ExecutionStatus.FAILED: 500,
    ExecutionStatus.TIMED_OUT: 504,
    ExecutionStatus.CANCELLED: 409,
}
# Set by the web server for the body it sends, never taken from a node.
_HOP_BY_HOP = {
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}


@dataclass
class WebhookAnswer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    # True: ``body`` is a string sent as it is (a node set it); otherwise it is sent as JSON.
    raw: bool = False

    def content(self) -> bytes:
        if self.raw:
            return str(self.body).encode()
        return json.dumps(self.body).encode()

    @property
    def content_type(self) -> str:
        for name, value in self.headers.items():
            if name.lower() == "content-type":
                return value
        return "text/plain; charset=utf-8" if self.raw else "application/json"


def webhook_wait(*, execution_id, timeout: float) -> Execution:
    """The execution once it has finished, or as it is when ``timeout`` seconds have passed.

    The request's thread sleeps on an event set by the process's finish listener (Redis
    pub/sub), and looks at the database only when woken or every
    WECONNECT_WEBHOOK_POLL_SECONDS, should a notification be lost."""
    deadline = time.monotonic() + timeout
    poll = settings.WECONNECT_WEBHOOK_POLL_SECONDS
    with finished_event(execution_id) as event:
        while True:
            execution = Execution.objects.get(id=execution_id)
            remaining = deadline - time.monotonic()
            if execution.status in EXECUTION_TERMINAL or remaining <= 0:
                return execution
            event.wait(min(remaining, poll))
            event.clear()


def webhook_answer(*, workflow: Workflow, execution: Execution, status_url: str) -> WebhookAnswer:
    """What a synchronous webhook answers for ``execution`` in its current state."""
    if execution.status not in EXECUTION_TERMINAL:
        return WebhookAnswer(
            202,
            {
                "id": str(execution.id),
                "execution_id": str(execution.id),
                "workflow_id": str(execution.workflow_id),
                "status": execution.status,
                "status_url": status_url,
            },
            {"Location": status_url},
        )
    node = workflow.webhook_respond_node
    run = (
        NodeRun.objects.filter(execution_id=execution.id, node=node)
        .values("status", "output")
        .first()
        if node
        else None
    )
    if run is not None and _is_response(run["output"]) and run["status"] in ("succeeded", "failed"):
        # The respond node says what to answer, success or not (a deliberate 404, say).
        return _node_response(run["output"])
    if execution.status == ExecutionStatus.SUCCEEDED:
        if run is not None and run["status"] == "succeeded":
            return WebhookAnswer(200, run["output"])
        # No respond node, or it did not run (a branch not taken): the execution's output.
        return WebhookAnswer(200, execution.output)
    return WebhookAnswer(
        FAILURE_STATUS.get(execution.status, 500),
        {
            "id": str(execution.id),
            "execution_id": str(execution.id),
            "status": execution.status,
            "error": execution.error,
        },
    )


def _is_response(output: Any) -> bool:
    return isinstance(output, dict) and "statusCode" in output


def _node_response(output: dict) -> WebhookAnswer:
    code = output.get("statusCode")
    if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
        return WebhookAnswer(
            500,
            {"error": {"message": f"the respond node gave statusCode {code!r}, not 100-599"}},
        )
    headers: dict[str, str] = {}
    given = output.get("headers") or {}
    if isinstance(given, dict):
        for name, value in given.items():
            if not isinstance(name, str) or name.lower() in _HOP_BY_HOP:
                continue
            text = value if isinstance(value, str) else json.dumps(value)
            # A header split by a newline would let a node forge headers of its own.
            if any(c in name + text for c in "\r\n\x00") or not name.strip():
                continue
            headers[name] = text
    body = output.get("body")
    return WebhookAnswer(code, body, headers, raw=isinstance(body, str))


def webhook_result(*, workflow: Workflow, triggered: Triggered, status_url: str) -> WebhookAnswer:
    """Wait for the triggered execution (``on_completion``) and say what to answer."""
    execution = triggered.execution
    if workflow.webhook_respond == WebhookRespond.ON_COMPLETION:
        execution = webhook_wait(
            execution_id=execution.id, timeout=workflow.webhook_respond_timeout_seconds
        )
    return webhook_answer(workflow=workflow, execution=execution, status_url=status_url)


def webhook_execution(*, workflow: Workflow, execution_id: str) -> Execution:
    """An execution of the workflow, for the webhook's status URL. Raises WebhookNotFound."""
    try:
        pk = uuid.UUID(str(execution_id))
    except ValueError:
        raise WebhookNotFound() from None
    execution = Execution.objects.filter(id=pk, workflow=workflow).first()
    if execution is None:
        raise WebhookNotFound()
    return execution


def webhook_token_rotate(*, workflow: Workflow) -> str:
    """Give the workflow a new webhook token (the old one stops working at once) and return
    it. Raises Conflict when webhooks are not enabled for the workflow."""
    token = Workflow.new_webhook_token()
    # Conditional update: a concurrent save that disabled webhooks wins over the rotation.
    changed = Workflow.objects.filter(pk=workflow.pk, webhook_enabled=True).update(
        webhook_token=token
    )
    if not changed:
        raise Conflict("webhooks are not enabled for this workflow")
    workflow.webhook_token = token
    return token
