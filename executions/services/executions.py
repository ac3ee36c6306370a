"""Starting, cancelling, retrying and timing out executions: the rules of each, on top of the
engine that carries them out."""

from __future__ import annotations

from typing import Any

from executions.engine.completion import (  # noqa: F401  (the services' public names)
    execution_terminate,
    execution_time_out_if_due,
    node_run_wake,
)
from executions.engine.start import (  # noqa: F401  (the services' public names)
    deferred_start_due,
    execution_create,
    execution_start_deferred,
    schedule_run_active,
)
from executions.errors import Conflict
from executions.models import Execution, WorkflowVersion
from executions.states import EXECUTION_UNFINISHED, ExecutionStatus, NodeRunStatus, Trigger

__all__ = [
    "Conflict",
    "execution_cancel",
    "execution_create",
    "execution_start_deferred",
    "deferred_start_due",
    "schedule_run_active",
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


RETRY_VERSIONS = ("original", "latest")


def execution_retry(
    *,
    execution: Execution,
    mode: str = "from_failed",
    version: str = "original",
    input: Any = None,
) -> Execution:
    """Start a new execution with ``retry_of`` set, of the version the execution ran
    (``original``) or of the workflow's current version (``latest``). With ``from_failed`` the
    node runs that succeeded are copied as succeeded (not run again); on another version only
    those of nodes defined identically in both versions. ``input`` replaces the old
    execution's input (None: the same input). Raises Conflict while it is unfinished
    (paused included), or when its workflow is inactive or deleted."""
    if version not in RETRY_VERSIONS:
        raise ValueError(f"version must be one of {RETRY_VERSIONS}, not {version!r}")
    if execution.status in EXECUTION_UNFINISHED:
        raise Conflict(f"execution is still {execution.status}; cancel it or wait for it to finish")
    if execution.workflow is None:
        raise Conflict(f"workflow {execution.workflow_name!r} was deleted; it cannot run again")
    snapshot = execution.snapshot
    if version == "latest":
        workflow = execution.workflow
        snapshot = WorkflowVersion.objects.get(workflow=workflow, version=workflow.version)
    reuse = None
    if mode == "from_failed":
        reuse = list(execution.node_runs.filter(status=N.SUCCEEDED))
        if snapshot.id != execution.snapshot_id:
            # A node whose definition changed in the new version runs again.
            unchanged = _unchanged_nodes(execution.snapshot.graph, snapshot.graph)
            reuse = [r for r in reuse if r.node in unchanged]
    new, _ = execution_create(
        workflow=execution.workflow,
        input=execution.input if input is None else input,
        trigger=Trigger.RETRY,
        snapshot=snapshot,
        retry_of=execution,
        reuse=reuse,
        parent_node_run_id=None,
        depth=execution.depth,
        priority=execution.priority,
    )
    return new


def _unchanged_nodes(old: dict, new: dict) -> set[str]:
    """Keys of the nodes defined identically (type, config, retry, timeout) in both documents."""
    before = {n["key"]: n for n in old.get("nodes", [])}
    return {n["key"] for n in new.get("nodes", []) if before.get(n["key"]) == n}
