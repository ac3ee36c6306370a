"""Pausing and unpausing an execution.

Paused (status ``paused``): no node run starts — claims require an active execution, so a
queued run's message is dropped and the run stays queued; a running node finishes and its
result is recorded, but nothing is scheduled after it (the finish paths schedule only for an
active execution). Cancel and the deadline still apply.

Unpause moves the execution back to ``running`` and continues where it stopped: the results
recorded while paused are routed now (successors queued or skipped, an unhandled failure
fails the execution, a finished graph completes), and every queued or retrying run that is
due is dispatched again.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from executions import store
from executions.engine import dispatch
from executions.engine.completion import execution_complete_if_done, execution_fail_unhandled
from executions.engine.snapshots import graph_for
from executions.errors import Conflict
from executions.graph import Outcome, decide, node_input
from executions.models import Execution, ExecutionEvent, NodeRun
from executions.states import (
    NODE_TERMINAL,
    ExecutionStatus,
    NodeRunStatus,
)

log = logging.getLogger("weconnect.engine")
E, N = ExecutionStatus, NodeRunStatus


def execution_pause(*, execution: Execution, actor: str = "") -> Execution:
    """Pause a pending or running execution. Raises Conflict in any other status."""
    now = timezone.now()
    with transaction.atomic():
        changed = store.execution_pause(execution_id=execution.id)
        if changed:
            ExecutionEvent.objects.create(execution=execution, at=now, event="paused", actor=actor)
    execution.refresh_from_db()
    if not changed:
        raise Conflict(f"execution is {execution.status}; only a pending or running one pauses")
    log.info("execution paused", extra={"execution_id": str(execution.id)})
    return execution


def execution_unpause(*, execution: Execution, actor: str = "") -> Execution:
    """Continue a paused execution where it stopped. Raises Conflict when it is not paused."""
    now = timezone.now()
    with transaction.atomic():
        changed = store.execution_unpause(execution_id=execution.id, now=now)
        if changed:
            ExecutionEvent.objects.create(
                execution=execution, at=now, event="unpaused", actor=actor
            )
            _resume(execution.id, now)
    if changed:
        # A node whose finish statement read the execution as paused while this transaction
        # was committing routed nothing: a second pass (every step is conditional) sees it.
        with transaction.atomic():
            _resume(execution.id, timezone.now())
    execution.refresh_from_db()
    if not changed:
        raise Conflict(f"execution is {execution.status}, not paused")
    log.info("execution unpaused", extra={"execution_id": str(execution.id)})
    return execution


def _resume(execution_id, now) -> None:
    """Route what finished while paused and dispatch what is due. Inside a transaction."""
    execution = (
        Execution.objects.select_for_update()
        .only("id", "status", "snapshot_id", "parent_node_run_id", "input")
        .get(id=execution_id)
    )
    if execution.status not in (E.RUNNING, E.PENDING):
        return
    graph = graph_for(execution.snapshot_id)
    # Runs that finished while paused counted no join down. Lock the pending joins before
    # reading any status: a predecessor that counts one down now waits for this transaction
    # and counts down from the count set here, which saw it unfinished.
    joins = [k for k in graph.nodes if len(graph.predecessors(k)) > 1]
    if joins:
        list(
            NodeRun.objects.select_for_update()
            .filter(execution_id=execution_id, node__in=joins, status=N.PENDING)
            .values_list("id", flat=True)
        )
    runs = {r.node: r for r in NodeRun.objects.filter(execution_id=execution_id)}
    known = {
        key: Outcome(r.status, r.branch, r.output)
        for key, r in runs.items()
        if r.status in NODE_TERMINAL
    }
    # A failure recorded while paused that no error connection handles ends the execution,
    # as it would have at once.
    for key, r in runs.items():
        if r.status == N.FAILED and not graph.has_error_route(key):
            execution_fail_unhandled(execution_id, node=key, error=r.error, now=now)
            return
    items: list[dispatch.Dispatch] = []
    recount: dict[str, int] = {}
    for key in graph.topological_order():
        run = runs.get(key)
        if run is None or run.status != N.PENDING:
            continue
        verdict, fired = decide(graph, key, known)
        if verdict == "run":
            task_id = dispatch.new_task_id()
            queued = store.node_run_queue(
                execution_id=execution_id,
                node=key,
                input=node_input(fired, {k: o.output for k, o in known.items()}),
                task_id=task_id,
                now=now,
            )
            if queued:
                items.append(dispatch.for_node(str(execution_id), graph, key, task_id))
        elif verdict == "skip":
            if store.node_run_skip(execution_id=execution_id, node=key, now=now):
                known[key] = Outcome(N.SKIPPED)
        elif key in joins:
            recount[key] = sum(1 for p in graph.predecessors(key) if p not in known)
    store.node_runs_recount(execution_id=execution_id, counts=recount)
    # Runs whose messages were dropped while paused: due now, or parked for a sub-workflow
    # that may have finished meanwhile (its wake was refused) — the node looks again.
    waiting = NodeRun.objects.filter(
        execution_id=execution_id, status__in=[N.QUEUED, N.RETRYING]
    ).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now) | Q(state__has_key="child")
    )
    for run in waiting.exclude(node__in=[i.node for i in items]):
        task_id = dispatch.new_task_id()
        if run.status == N.QUEUED and run.next_attempt_at and run.next_attempt_at > now:
            # Parked for a sub-workflow: due now, the node looks at its child again.
            moved = store.node_run_wake(
                node_run_id=run.id, execution_id=execution_id, task_id=task_id, now=now
            )
        else:
            moved = store.node_run_redispatch(
                node_run_id=run.id,
                status=run.status,
                old_task_id=run.task_id,
                task_id=task_id,
                now=now,
            )
        if moved:
            items.append(dispatch.for_node(str(execution_id), graph, run.node, task_id))
    if items:
        dispatch.send_on_commit(items)
    else:
        execution_complete_if_done(execution, graph, now)
