"""``sub_workflow``: run another workflow of the same owner and wait for it.

The first run starts the child execution (trigger ``sub_workflow``, depth + 1, pointing back
at this node run) and parks with the child's id in its state; no worker waits. When the
child finishes the engine wakes this run, which then outputs the child's output or fails
naming the child.

Redelivery is harmless twice over: a run whose state already names a child never starts
another, and the child is created with an idempotency key derived from this node run, so a
run that died between creating the child and saving its state finds the same child again.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from executions.credentials import redaction
from executions.errors import Conflict
from executions.models import Execution, Workflow
from executions.nodes.base import Context, NonRetryableError, Wait, register
from executions.nodes.templating import Scope, TemplatedNodeType
from executions.states import ExecutionStatus

_UUID = "^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"


@register
class SubWorkflow(TemplatedNodeType):
    type = "sub_workflow"
    description = (
        "Starts another workflow of the same owner with `input` (templates allowed; the node's "
        "input when absent), waits for it without holding a worker, and outputs its output. A "
        "failed, cancelled or timed-out child fails this node."
    )
    config_schema = {
        "type": "object",
        "properties": {
            "workflow": {"type": "string", "pattern": _UUID},
            "input": {"description": "The child's input (any JSON; templates allowed)."},
        },
        "required": ["workflow"],
        "additionalProperties": False,
    }

    def run(self, ctx: Context) -> Any:
        child_id = (ctx.state or {}).get("child")
        if child_id is None:
            return super().run(ctx)  # renders the config, then execute() starts the child
        child = (
            Execution.objects.filter(id=child_id).only("id", "status", "output", "error").first()
        )
        if child is None:
            raise NonRetryableError(
                f"sub-workflow execution {child_id} no longer exists",
                error_type="SubWorkflowFailed",
            )
        return self._outcome(child)

    def execute(self, ctx: Context, config: dict[str, Any], scope: Scope) -> Any:
        limit = settings.WECONNECT_MAX_SUBWORKFLOW_DEPTH
        if ctx.depth + 1 > limit:
            raise NonRetryableError(
                f"sub-workflow depth limit reached: execution depth {ctx.depth} cannot start a child "
                f"(WECONNECT_MAX_SUBWORKFLOW_DEPTH={limit})",
                error_type="SubWorkflowDepthExceeded",
            )
        workflow = Workflow.objects.filter(id=config["workflow"], owner_id=ctx.owner_id).first()
        if workflow is None:
            raise NonRetryableError(
                f"workflow {config['workflow']} not found for this owner",
                error_type="SubWorkflowNotFound",
            )
        # A secret a template read stays in this run: the child's stored input is redacted like
        # everything else the run stores (the child can name the credential itself).
        child_input = redaction.redact_current(config["input"] if "input" in config else ctx.input)
        try:
            child = ctx.start_child(workflow=workflow, input=child_input)
        except Conflict:  # the start refuses an inactive workflow
            raise NonRetryableError(
                f"workflow {workflow.id} is inactive", error_type="SubWorkflowInactive"
            ) from None
        return self._outcome(child)

    def _outcome(self, child) -> Any:
        if child.status == ExecutionStatus.SUCCEEDED:
            return child.output
        if child.status in (ExecutionStatus.PENDING, ExecutionStatus.RUNNING):
            # Woken by the engine when the child finishes; the poll is a backstop for a wake-up
            # that arrives while this run is still between starting the child and parking.
            poll = timedelta(seconds=settings.WECONNECT_SUBWORKFLOW_POLL_SECONDS)
            return Wait(until=timezone.now() + poll, state={"child": str(child.id)})
        message = (child.error or {}).get("message") if isinstance(child.error, Mapping) else None
        raise NonRetryableError(
            f"sub-workflow execution {child.id} {child.status}"
            + (f": {message}" if message else ""),
            error_type="SubWorkflowFailed",
            details={
                "child_execution_id": str(child.id),
                "child_status": child.status,
                "child_error": child.error,
            },
        )
