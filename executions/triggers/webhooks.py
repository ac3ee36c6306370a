"""Webhooks: start an execution from an HTTP POST authenticated by the workflow's secret token.

The token is the only credential, so every way of failing it (unknown workflow, webhooks
off, wrong or missing token) looks the same from outside, and the comparison takes the same
time whatever the token's prefix (hmac.compare_digest, also against a dummy when there is no
workflow to compare with).
"""

from __future__ import annotations

import hmac
import uuid
from typing import Any

from executions.errors import Conflict
from executions.models import Execution, Workflow
from executions.services.executions import execution_create
from executions.states import Trigger

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
) -> tuple[Execution, bool]:
    """Start an execution of the workflow with ``input`` (trigger ``webhook``). Raises
    WebhookNotFound, or Conflict when the workflow is inactive."""
    workflow = webhook_workflow(workflow_id=workflow_id, token=token)
    return execution_create(
        workflow=workflow, input=input, trigger=Trigger.WEBHOOK, idempotency_key=idempotency_key
    )


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
