"""The end of an execution: complete when nothing is left active, stop (fail on an unhandled
error, cancel, time out) with every unfinished node run cancelled, and wake the parent node
run of a sub-workflow once it has finished."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from executions import store
from executions.engine import dispatch, notify
from executions.engine.deadlocks import retry_on_deadlock
from executions.engine.wake import node_run_wake_locked
from executions.graph import Graph
from executions.models import Execution, NodeRun
from executions.states import (
    EXECUTION_ACTIVE,
    EXECUTION_UNFINISHED,
    NODE_ACTIVE,
    ExecutionStatus,
    NodeRunStatus,
)

log = logging.getLogger("weconnect.engine")
N = NodeRunStatus


def execution_complete_if_done(execution: Execution, graph: Graph, now) -> bool:
    """Finish the execution when no node run is active any more.

    Two last nodes finishing together each see the other still running in their own
    transaction; locking the execution row before the check serializes them, and the later one
    sees both finished."""
    status = (
        Execution.objects.select_for_update()
        .filter(id=execution.id)
        .values_list("status", flat=True)
        .first()
    )
    if status not in EXECUTION_ACTIVE:
        return False
    if NodeRun.objects.filter(execution_id=execution.id, status__in=NODE_ACTIVE).exists():
        return False
    sinks = graph.sink_keys()
    output = dict(
        NodeRun.objects.filter(
            execution_id=execution.id, node__in=sinks, status=N.SUCCEEDED
        ).values_list("node", "output")
    )
    done = store.execution_succeed(
        execution_id=execution.id, output={k: output[k] for k in sinks if k in output}, now=now
    )
    if done:
        log.info("execution succeeded", extra={"execution_id": str(execution.id)})
        on_execution_finished(execution.id, execution.parent_node_run_id, execution.concurrency_key)
    return done


def execution_stop(
    execution_id, *, status: str, error: Any, now=None, include_running: bool
) -> bool:
    """Move an active execution to a terminal ``status`` and cancel its unfinished node runs
    (running ones too when ``include_running``); queued tasks are revoked after commit.
    Must be called inside a transaction."""
    now = now or timezone.now()
    if not store.execution_end(execution_id=execution_id, status=status, error=error, now=now):
        return False
    task_ids = store.node_runs_cancel(
        execution_id=execution_id, include_running=include_running, now=now
    )
    transaction.on_commit(lambda: dispatch.revoke(task_ids))
    parent, key = (
        Execution.objects.filter(id=execution_id)
        .values_list("parent_node_run_id", "concurrency_key")
        .first()
    ) or (None, None)
    on_execution_finished(execution_id, parent, key)
    log.info("execution %s", status, extra={"execution_id": str(execution_id)})
    return True


def execution_fail_unhandled(execution_id, *, node: str, error: Any, now) -> bool:
    """An unhandled error stops the execution at once; running nodes may finish but will
    schedule nothing (they find the execution failed)."""
    return execution_stop(
        execution_id,
        status=ExecutionStatus.FAILED,
        error={
            "node": node,
            "message": f"node {node!r} failed with no error connection",
            "detail": error,
        },
        now=now,
        include_running=False,
    )


def execution_terminate(
    *, execution_id, status: str, error: dict, now=None, only_if_due: bool = False
) -> bool:
    """Stop an active execution with a terminal ``status`` (cancelled, timed_out): unfinished
    node runs, running ones included, become ``cancelled``, queued tasks are revoked, nothing
    more is scheduled, and its Redis keys are released. Returns False when it was no longer
    active (or, with ``only_if_due``, not yet past its deadline)."""
    now = now or timezone.now()

    def work() -> bool:
        with transaction.atomic():
            if (
                only_if_due
                and not Execution.objects.filter(
                    id=execution_id, status__in=EXECUTION_UNFINISHED, deadline_at__lte=now
                ).exists()
            ):
                return False
            return execution_stop(
                execution_id, status=status, error=error, now=now, include_running=True
            )

    stopped = bool(retry_on_deadlock(work))
    if stopped:
        # Sub-workflows started by this execution stop with it.
        for child in Execution.objects.filter(
            parent_node_run__execution_id=execution_id, status__in=EXECUTION_UNFINISHED
        ).values_list("id", flat=True):
            execution_terminate(
                execution_id=child,
                status=ExecutionStatus.CANCELLED,
                error={
                    "message": f"parent execution {execution_id} stopped ({status})",
                    "type": "Cancelled",
                },
                now=now,
            )
    return stopped


def execution_time_out_if_due(*, execution_id, now=None) -> bool:
    """Time out an active execution whose deadline has passed."""
    return execution_terminate(
        execution_id=execution_id,
        status=ExecutionStatus.TIMED_OUT,
        error={"message": "execution passed its deadline", "type": "Timeout"},
        now=now,
        only_if_due=True,
    )


def node_run_children_cancel(*, node_run_id: int, message: str, now=None) -> int:
    """Cancel every unfinished child execution a node run started (a for_each whose item
    failed); returns how many were stopped."""
    stopped = 0
    for child in Execution.objects.filter(
        parent_node_run_id=node_run_id, status__in=EXECUTION_UNFINISHED
    ).values_list("id", flat=True):
        stopped += execution_terminate(
            execution_id=child,
            status=ExecutionStatus.CANCELLED,
            error={"message": message, "type": "Cancelled"},
            now=now,
        )
    return stopped


def children_canceller(*, node_run_id: int):
    """The capability a node run is given to stop the children it started."""

    def cancel_children(message: str) -> int:
        return node_run_children_cancel(node_run_id=node_run_id, message=message)

    return cancel_children


def node_run_wake(*, node_run_id: int) -> bool:
    """Make a parked (waiting) node run due now and dispatch it after commit, e.g. when the
    sub-workflow or a for_each child it waits for has finished. Under the run's row lock, so a
    wake that meets the run as it parks is never lost (engine/wake.py)."""
    with transaction.atomic():
        return node_run_wake_locked(node_run_id=node_run_id, now=timezone.now())


def on_execution_finished(execution_id, parent_node_run_id, concurrency_key=None) -> None:
    """A finished sub-workflow wakes the node run that waits for it, after commit; synchronous
    webhooks waiting for any execution are told; an execution under a concurrency limit
    releases its slot to the next in line (every terminal transition passes here)."""
    transaction.on_commit(lambda: notify.publish_finished(execution_id))
    if concurrency_key is not None:
        transaction.on_commit(lambda: dispatch.send_concurrency_release(execution_id))
    if parent_node_run_id:
        transaction.on_commit(lambda: node_run_wake(node_run_id=parent_node_run_id))
