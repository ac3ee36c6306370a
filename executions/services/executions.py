"""Starting, cancelling, retrying and timing out executions: the rules of each, on top of the
engine that carries them out."""

from __future__ import annotations

from executions.engine.completion import (  # noqa: F401  (the services' public names)
    execution_terminate,
    execution_time_out_if_due,
    node_run_wake,
)
from executions.engine.start import execution_create
from executions.errors import Conflict
from executions.models import Execution
from executions.states import EXECUTION_ACTIVE, ExecutionStatus, NodeRunStatus, Trigger

__all__ = [
    "Conflict",
    "execution_cancel",
    "execution_create",
    "execution_retry",
    "execution_terminate",
    "execution_time_out_if_due",
    "node_run_wake",
]

N = NodeRunStatus


def execution_cancel(*, execution: Execution, reason: str = "cancelled by request") -> Execution:
    """Cancel an active execution. Raises Conflict when it has already finished."""
    stopped = execution_terminate(
        execution_id=execution.id,
        status=ExecutionStatus.CANCELLED,
        error={"message": reason, "type": "Cancelled"},
    )
    execution.refresh_from_db()
    if not stopped:
        raise Conflict(f"execution is already {execution.status}")
    return execution


def execution_retry(*, execution: Execution, mode: str = "from_failed") -> Execution:
    """Start a new execution of the same workflow version with ``retry_of`` set. With
    ``from_failed`` the node runs that succeeded are copied as succeeded (not run again).
    Raises Conflict while it is still active, or when its workflow is inactive."""
    if execution.status in EXECUTION_ACTIVE:
        raise Conflict(f"execution is still {execution.status}; cancel it or wait for it to finish")
    reuse = None
    if mode == "from_failed":
        reuse = list(execution.node_runs.filter(status=N.SUCCEEDED))
    new, _ = execution_create(
        workflow=execution.workflow,
        input=execution.input,
        trigger=Trigger.RETRY,
        snapshot=execution.snapshot,
        retry_of=execution,
        reuse=reuse,
        parent_node_run_id=None,
        depth=execution.depth,
        priority=execution.priority,
    )
    return new
