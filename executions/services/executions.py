"""Starting, cancelling, retrying and timing out executions."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from executions.engine import dispatch
from executions.engine.scheduler import (
    execution_complete_if_done,
    execution_stop,
    retry_on_deadlock,
)
from executions.engine.snapshots import graph_for
from executions.graph import Graph, Outcome, decide, find_cycle, node_input
from executions.models import Execution, NodeRun, Workflow, WorkflowVersion
from executions.states import (
    EXECUTION_ACTIVE,
    NODE_RUN_TRANSITIONS,
    ExecutionStatus,
    NodeRunStatus,
    Trigger,
    transition,
)

log = logging.getLogger("weconnect.engine")
N = NodeRunStatus


class Conflict(Exception):
    """The request cannot be carried out in the current state (answered as 409)."""


def initial_plan(graph: Graph, reused: dict[str, Outcome], execution_input: Any):
    """Which nodes to queue (with their input) and which to skip when an execution starts,
    given the node runs it reuses from an earlier execution (``from_failed`` retries)."""
    known = dict(reused)
    queue: dict[str, Any] = {}
    skip: list[str] = []
    for key in graph.topological_order():
        if key in known:
            continue
        if not graph.predecessors(key):
            queue[key] = execution_input
            continue
        verdict, fired = decide(graph, key, known)
        if verdict == "run":
            queue[key] = node_input(fired, {k: o.output for k, o in known.items()})
        elif verdict == "skip":
            known[key] = Outcome(N.SKIPPED)
            skip.append(key)
    return queue, skip


def execution_create(
    *,
    workflow: Workflow,
    input: Any,
    trigger: str = Trigger.API,
    idempotency_key: str | None = None,
    snapshot: WorkflowVersion | None = None,
    retry_of: Execution | None = None,
    reuse: list[NodeRun] | None = None,
    parent_node_run_id: int | None = None,
    depth: int = 0,
    priority: str | None = None,
) -> tuple[Execution, bool]:
    """Create an execution and its node runs in one transaction and dispatch the start nodes
    after commit. Returns (execution, created); with an ``idempotency_key`` already used for
    this workflow it returns the existing execution and creates nothing.

    ``priority`` defaults to the parent execution's for a sub-workflow, else to the
    workflow's own setting."""
    if idempotency_key:
        existing = Execution.objects.filter(
            workflow=workflow, idempotency_key=idempotency_key
        ).first()
        if existing:
            return existing, False
    if snapshot is None:
        snapshot = WorkflowVersion.objects.get(workflow=workflow, version=workflow.version)
    graph = graph_for(snapshot.id)
    cycle = find_cycle(graph.nodes, [(e.source, e.target) for e in graph.edges])
    if cycle:  # saved workflows are acyclic; this guards snapshots written any other way
        raise Conflict("cycle: " + " -> ".join(cycle))
    if priority is None:
        priority = _default_priority(workflow, parent_node_run_id)
    now = timezone.now()
    timeout = int(snapshot.graph.get("timeout_seconds", workflow.timeout_seconds))
    reused = {r.node: r for r in (reuse or []) if r.node in graph.nodes}
    queue, skip = initial_plan(
        graph, {k: Outcome(r.status, r.branch, r.output) for k, r in reused.items()}, input
    )
    try:
        with transaction.atomic():
            execution = Execution.objects.create(
                workflow=workflow,
                snapshot=snapshot,
                workflow_version=snapshot.version,
                trigger=trigger,
                priority=priority,
                input=input,
                idempotency_key=idempotency_key,
                retry_of=retry_of,
                parent_node_run_id=parent_node_run_id,
                depth=depth,
                deadline_at=now + timedelta(seconds=timeout),
            )
            items: list[dispatch.Dispatch] = []
            rows = []
            for key, spec in graph.nodes.items():
                row = NodeRun(execution=execution, node=key, node_type=spec.type)
                if key in reused:
                    old = reused[key]
                    row.status, row.input, row.output, row.branch = (
                        N.SUCCEEDED,
                        old.input,
                        old.output,
                        old.branch,
                    )
                    row.attempts, row.started_at, row.finished_at = (
                        0,
                        old.started_at,
                        old.finished_at,
                    )
                elif key in queue:
                    row.status, row.input, row.queued_at, row.dispatched_at = (
                        N.QUEUED,
                        queue[key],
                        now,
                        now,
                    )
                    row.task_id = dispatch.new_task_id()
                    items.append(
                        dispatch.Dispatch(
                            str(execution.id),
                            key,
                            row.task_id,
                            spec.timeout_seconds,
                            priority=priority,
                        )
                    )
                elif key in skip:
                    row.status, row.finished_at = N.SKIPPED, now
                rows.append(row)
            NodeRun.objects.bulk_create(rows)
            if items:
                dispatch.send_on_commit(items)
            else:
                execution_complete_if_done(execution, graph, now)
            _schedule_deadline_check(execution)
    except IntegrityError:
        if not idempotency_key:
            raise
        # A concurrent request with the same key committed first: answer with its execution.
        return Execution.objects.get(workflow=workflow, idempotency_key=idempotency_key), False
    log.info(
        "execution created",
        extra={
            "execution_id": str(execution.id),
            "workflow_id": str(workflow.id),
            "trigger": trigger,
        },
    )
    return execution, True


def _default_priority(workflow: Workflow, parent_node_run_id: int | None) -> str:
    if parent_node_run_id is not None:
        parent = (
            Execution.objects.filter(node_runs__id=parent_node_run_id)
            .values_list("priority", flat=True)
            .first()
        )
        if parent:
            return parent
    return workflow.priority


def _schedule_deadline_check(execution: Execution) -> None:
    """A deadline close enough for a countdown gets a precise check; others are caught by the
    recovery task's deadline scan."""
    seconds = (execution.deadline_at - timezone.now()).total_seconds()
    from django.conf import settings

    if seconds <= settings.WECONNECT_MAX_ETA_SECONDS:

        def send() -> None:
            from executions.tasks import check_deadline

            try:
                check_deadline.apply_async(
                    args=[str(execution.id)], countdown=max(0.0, seconds) + 0.2
                )
            except Exception as exc:
                log.warning("deadline check not sent", extra={"error": repr(exc)})

        transaction.on_commit(send)


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
                    id=execution_id, status__in=EXECUTION_ACTIVE, deadline_at__lte=now
                ).exists()
            ):
                return False
            return execution_stop(
                execution_id, status=status, error=error, now=now, include_running=True
            )

    stopped = bool(retry_on_deadlock(work))
    if stopped:
        _release_execution_keys(execution_id)
        # Sub-workflows started by this execution stop with it.
        for child in Execution.objects.filter(
            parent_node_run__execution_id=execution_id, status__in=EXECUTION_ACTIVE
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


def execution_time_out_if_due(*, execution_id, now=None) -> bool:
    """Time out an active execution whose deadline has passed."""
    return execution_terminate(
        execution_id=execution_id,
        status=ExecutionStatus.TIMED_OUT,
        error={"message": "execution passed its deadline", "type": "Timeout"},
        now=now,
        only_if_due=True,
    )


def _release_execution_keys(execution_id) -> None:
    """Drop any Redis key of ours that belongs to this execution (join locks expire on their
    own, but a cancelled execution should leave nothing behind at all)."""
    from executions.engine.locks import key, redis_client

    try:
        client = redis_client()
        keys = list(client.scan_iter(match=key("lock", execution_id, "*"), count=500))
        if keys:
            client.delete(*keys)
    except Exception as exc:
        log.warning(
            "could not release execution keys",
            extra={"execution_id": str(execution_id), "error": repr(exc)},
        )


def execution_retry(*, execution: Execution, mode: str = "from_failed") -> Execution:
    """Start a new execution of the same workflow version with ``retry_of`` set. With
    ``from_failed`` the node runs that succeeded are copied as succeeded (not run again)."""
    if execution.status in EXECUTION_ACTIVE:
        raise Conflict(f"execution is still {execution.status}; cancel it or wait for it to finish")
    if not execution.workflow.is_active:
        raise Conflict("workflow is inactive")
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


def node_run_wake(*, node_run_id: int) -> bool:
    """Make a parked (waiting) node run due now and dispatch it, e.g. when the sub-workflow
    it waits for has finished."""
    now = timezone.now()
    run = NodeRun.objects.filter(id=node_run_id).select_related("execution").first()
    if run is None:
        return False
    task_id = dispatch.new_task_id()
    changed = transition(
        # Not a join (see runner._claim): the run's own status must be rechecked on its
        # committed version if a claim holds the row.
        NodeRun.objects.filter(
            id=node_run_id,
            execution_id__in=Execution.objects.filter(
                id=run.execution_id, status__in=EXECUTION_ACTIVE
            ).values("id"),
        ),
        N.QUEUED,
        table=NODE_RUN_TRANSITIONS,
        sources=[N.QUEUED],
        next_attempt_at=now,
        dispatched_at=now,
        task_id=task_id,
    )
    if not changed:
        # Still running (it has not parked yet): leave a mark the park step sees.
        NodeRun.objects.filter(id=node_run_id, status=N.RUNNING).update(next_attempt_at=now)
        return False
    if changed:
        graph = graph_for(run.execution.snapshot_id)
        dispatch.send(
            [
                dispatch.Dispatch(
                    str(run.execution_id),
                    run.node,
                    task_id,
                    graph.nodes[run.node].timeout_seconds,
                    priority=run.execution.priority,
                )
            ]
        )
    return bool(changed)
