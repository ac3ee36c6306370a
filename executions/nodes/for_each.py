"""``for_each``: run a workflow once per item of a list, at most ``concurrency`` at a time.

Every child is an ordinary execution (trigger ``for_each``) pointing back at this node run,
with its item's index. The node never holds a worker while children run: each of its runs
reads where the children stand (one aggregate query), starts as many new ones as the
concurrency allows, in item order, and parks. A child that finishes wakes it (the same wake a
sub-workflow uses); a periodic poll is the backstop.

Nothing is started twice and nothing is lost across crashes: a child's start is keyed by this
node run and its index (an idempotent create), and children are started strictly in index
order, so the children themselves say which items have started (indexes 0 .. max).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Max, Q
from django.utils import timezone

from executions.credentials import redaction
from executions.errors import Conflict
from executions.models import Execution, Workflow
from executions.nodes.base import Context, NonRetryableError, Wait, register
from executions.nodes.templating import Scope, TemplatedNodeType
from executions.states import EXECUTION_UNFINISHED, ExecutionStatus

_UUID = "^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
_FAILED = (ExecutionStatus.FAILED, ExecutionStatus.CANCELLED, ExecutionStatus.TIMED_OUT)
DEFAULT_CONCURRENCY = 10


@register
class ForEach(TemplatedNodeType):
    type = "for_each"
    description = (
        "Runs another workflow of the same owner once per item of `items` (a template or "
        "JMESPath over the input that yields a list), with `{item, index}` as its input, at "
        "most `concurrency` at a time, without holding a worker. Outputs `results` (the "
        "children's outputs in item order) and `failures` (by index). `on_item_error`: "
        "`fail` (the first failed child fails the node and cancels the rest) or `continue`."
    )
    config_schema = {
        "type": "object",
        "properties": {
            "items": {
                "description": "The list: a template such as `{{ input.orders }}`, a "
                '`{"jmespath": "orders"}` object, or a literal list.'
            },
            "workflow": {"type": "string", "pattern": _UUID},
            "concurrency": {"type": "integer", "minimum": 1, "maximum": 1000},
            "on_item_error": {"enum": ["fail", "continue"]},
        },
        "required": ["items", "workflow"],
        "additionalProperties": False,
    }

    def execute(self, ctx: Context, config: dict[str, Any], scope: Scope) -> Any:
        items = config["items"]
        if not isinstance(items, list):
            raise NonRetryableError(
                f"config['items'] must yield a list, got {_json_type(items)}",
                error_type="ForEachItemsInvalid",
            )
        limit = settings.WECONNECT_MAX_ITEMS
        if len(items) > limit:
            raise NonRetryableError(
                f"config['items'] yields {len(items)} items, more than WECONNECT_MAX_ITEMS "
                f"({limit})",
                error_type="ForEachTooManyItems",
            )
        depth_limit = settings.WECONNECT_MAX_SUBWORKFLOW_DEPTH
        if ctx.depth + 1 > depth_limit:
            raise NonRetryableError(
                f"depth limit reached: execution depth {ctx.depth} cannot start children "
                f"(WECONNECT_MAX_SUBWORKFLOW_DEPTH={depth_limit})",
                error_type="SubWorkflowDepthExceeded",
            )
        workflow = Workflow.objects.filter(id=config["workflow"], owner_id=ctx.owner_id).first()
        if workflow is None:
            raise NonRetryableError(
                f"workflow {config['workflow']} not found for this owner",
                error_type="SubWorkflowNotFound",
            )
        concurrency = int(config.get("concurrency", DEFAULT_CONCURRENCY))
        fail_fast = config.get("on_item_error", "fail") == "fail"

        children = Execution.objects.filter(parent_node_run_id=ctx.node_run_id)
        seen = children.aggregate(
            top=Max("item_index"),
            unfinished=Count("id", filter=Q(status__in=EXECUTION_UNFINISHED)),
            failed=Count("id", filter=Q(status__in=_FAILED)),
        )
        if fail_fast and seen["failed"]:
            self._fail(ctx, children)
        next_index = 0 if seen["top"] is None else seen["top"] + 1
        running = seen["unfinished"]
        # A secret a template read stays in this run: the children's inputs are redacted.
        while running < concurrency and next_index < len(items):
            child_input = redaction.redact_current({"item": items[next_index], "index": next_index})
            try:
                ctx.start_child(workflow=workflow, input=child_input, item_index=next_index)
            except Conflict as exc:  # an inactive workflow, or this execution has ended
                raise NonRetryableError(
                    f"item {next_index} could not start: {exc}", error_type="ForEachStartFailed"
                ) from None
            next_index += 1
            running += 1
        if next_index >= len(items) and running == 0:
            return self._collect(children, len(items))
        # Woken when a child finishes; the poll is a backstop for a wake-up that is lost.
        poll = timedelta(seconds=settings.WECONNECT_SUBWORKFLOW_POLL_SECONDS)
        return Wait(
            until=timezone.now() + poll,
            state={"started": next_index, "items": len(items), "concurrency": concurrency},
        )

    def _fail(self, ctx: Context, children) -> None:
        index, child_id, status, error = (
            children.filter(status__in=_FAILED)
            .order_by("item_index")
            .values_list("item_index", "id", "status", "error")
            .first()
        )
        stopped = ctx.cancel_children(f"item {index} of the for_each node {ctx.node.key} failed")
        message = _root_message(error)
        raise NonRetryableError(
            f"item {index} failed: child execution {child_id} {status}"
            + (f": {message}" if message else ""),
            error_type="ForEachItemFailed",
            details={
                "index": index,
                "child_execution_id": str(child_id),
                "child_status": status,
                "child_error": error,
                "children_cancelled": stopped,
            },
        )

    def _collect(self, children, count: int) -> dict[str, Any]:
        results: list[Any] = [None] * count
        failures = []
        rows = children.order_by("item_index").values_list(
            "item_index", "id", "status", "output", "error"
        )
        for index, child_id, status, output, error in rows:
            if index is None or index >= count:
                continue
            if status == ExecutionStatus.SUCCEEDED:
                results[index] = output
            else:
                failures.append(
                    {
                        "index": index,
                        "execution_id": str(child_id),
                        "status": status,
                        "message": _root_message(error),
                        "error": error,
                    }
                )
        return {"results": results, "failures": failures}


def _root_message(error: Any) -> str | None:
    """The message of the error that started it: an execution failed by a node with no error
    connection keeps the node's own error under ``detail``."""
    message = None
    for _ in range(8):
        if not isinstance(error, Mapping):
            break
        message = error.get("message") or message
        error = error.get("detail")
    return message


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
