"""What happens when a node run finishes: record it, route it, schedule what is now ready.

All of it is one transaction, so a worker that dies half-way leaves the run ``running`` (and
recovery runs it again) rather than a finished node with successors never scheduled.

Exactly-once scheduling of a join: two predecessors finishing at the same moment on two
workers each take a Redis lock on the join and then ``SELECT ... FOR UPDATE`` its node-run
row before reading the predecessors' outcomes. The row lock is what makes it correct: the
second transaction blocks until the first commits, and (READ COMMITTED takes a new snapshot
per statement) then sees the first predecessor finished. The Redis lock keeps the waiting out
of the database; the ``pending -> queued`` compare-and-set makes a duplicate a no-op.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from executions import store
from executions.engine import dispatch
from executions.engine.completion import (
    execution_complete_if_done,
    execution_fail_unhandled,
    on_execution_finished,
)
from executions.engine.deadlocks import retry_on_deadlock
from executions.engine.locks import RedisLock, key
from executions.graph import Graph, Outcome, decide, node_input
from executions.models import Execution, NodeRun
from executions.states import EXECUTION_ACTIVE, NODE_ACTIVE, NodeRunStatus

log = logging.getLogger("weconnect.engine")
N = NodeRunStatus


@dataclass
class Finish:
    status: str  # succeeded | failed
    output: Any
    branch: str | None = None
    error: Any = None


def queue_node(
    execution_id, node: str, node_input_value: Any, graph: Graph, now
) -> dispatch.Dispatch | None:
    """Queue a pending node run that became ready; the message to send after commit."""
    task_id = dispatch.new_task_id()
    if not store.node_run_queue(
        execution_id=execution_id, node=node, input=node_input_value, task_id=task_id, now=now
    ):
        return None
    return dispatch.for_node(str(execution_id), graph, node, task_id)


def node_run_finish(
    *,
    execution: Execution,
    graph: Graph,
    node: str,
    attempt: int,
    result: Finish,
    pure: store.PureStart | None = None,
) -> bool | None:
    """Record the end of attempt ``attempt`` of ``node`` and advance the execution.

    Returns False when the run had already moved on (cancelled, timed out, or taken over by a
    redelivered message after its worker was presumed dead): the result is then discarded.
    With ``pure`` (a pure node type's run, still ``queued``), only the one-statement forms
    apply; None means the run must be claimed first and finished the general way.
    """
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        fast = _finish_linear(execution, graph, node, attempt, result, pure)
        if fast is not None:
            return fast
    if pure is not None:
        return None
    locks: list[RedisLock] = []

    def work() -> bool:
        with transaction.atomic():
            now = timezone.now()
            if not store.node_run_end(
                execution_id=execution.id,
                node=node,
                attempt=attempt,
                status=result.status,
                output=result.output,
                branch=result.branch,
                error=result.error,
                now=now,
            ):
                return False
            status = (
                Execution.objects.filter(id=execution.id).values_list("status", flat=True).first()
            )
            if status not in EXECUTION_ACTIVE:
                return True  # finished runs of a stopped execution schedule nothing
            if result.status == N.FAILED and not graph.has_error_route(node):
                execution_fail_unhandled(execution.id, node=node, error=result.error, now=now)
                return True
            outgoing, waiting = _propagate(
                execution,
                graph,
                node,
                Outcome(result.status, result.branch, result.output),
                now,
                locks,
            )
            if outgoing:
                dispatch.send_on_commit(outgoing)
            elif not waiting:
                # A join left waiting is itself an active run, so the execution cannot be done:
                # the check (and its lock on the execution row, which every branch of a wide
                # fan-in would otherwise take in turn) would find exactly that.
                execution_complete_if_done(execution, graph, now)
            return True

    try:
        return retry_on_deadlock(work)
    finally:
        for lock in locks:
            lock.release()


def _finish_sink(
    execution: Execution, node: str, attempt: int, result: Finish, pure: store.PureStart | None
) -> bool:
    done, finished, parent = store.node_run_end_and_complete(
        execution_id=execution.id,
        node=node,
        attempt=attempt,
        output=result.output,
        branch=result.branch,
        execution_output={node: result.output},
        now=timezone.now(),
        pure=pure,
    )
    if finished:
        log.info("execution succeeded", extra={"execution_id": str(execution.id)})
        on_execution_finished(execution.id, parent, execution.concurrency_key)
    return done


def _finish_linear(
    execution: Execution,
    graph: Graph,
    node: str,
    attempt: int,
    result: Finish,
    pure: store.PureStart | None = None,
) -> bool | None:
    """The fast path of :func:`node_run_finish` (PostgreSQL, autocommit: one statement), or
    None when the general path is needed (a join or a skip among the successors, one of
    several sinks, an unhandled failure)."""
    if result.status == N.FAILED and not graph.has_error_route(node):
        return None
    successors = graph.successors(node)
    if not successors:
        if result.status == N.SUCCEEDED and graph.sink_keys() == [node]:
            return _finish_sink(execution, node, attempt, result, pure)
        return None
    outcome = {node: Outcome(result.status, result.branch, result.output)}
    for succ in successors:
        if len(graph.predecessors(succ)) != 1 or decide(graph, succ, outcome)[0] != "run":
            return None
    done, status, queued = store.node_run_end_and_queue(
        execution_id=execution.id,
        node=node,
        attempt=attempt,
        status=result.status,
        output=result.output,
        branch=result.branch,
        error=result.error,
        now=timezone.now(),
        successors=[(s, dispatch.new_task_id()) for s in successors],
        pure=pure,
    )
    if not done:
        return False
    if queued:
        dispatch.send([dispatch.for_node(str(execution.id), graph, n, t) for n, t in queued])
    elif status in EXECUTION_ACTIVE:
        # Nothing was pending after all (successors reused by a from_failed retry): the
        # execution may be complete now.
        with transaction.atomic():
            execution_complete_if_done(execution, graph, timezone.now())
    return True


def _propagate(
    execution: Execution, graph: Graph, node: str, outcome: Outcome, now, locks: list[RedisLock]
) -> tuple[list[dispatch.Dispatch], bool]:
    """Queue or skip the successors of ``node`` (and, through skips, theirs). Returns the
    messages to send and whether a join was seen still active under its row lock."""
    outgoing: list[dispatch.Dispatch] = []
    waiting = False
    known: dict[str, Outcome] = {node: outcome}
    work = [node]
    while work:
        current = work.pop(0)
        for succ in graph.successors(current):  # sorted: a stable lock order
            preds = graph.predecessors(succ)
            if len(preds) == 1:
                # Only `current` can make this node ready: the compare-and-set suffices.
                verdict, fired = decide(graph, succ, known)
                outputs = {current: known[current].output}
            else:
                name = key("lock", execution.id, succ)
                # A join reached again in this pass (through several skipped predecessors) is
                # already locked by us: taking it again would only wait for our own lock.
                if not any(held.name == name for held in locks):
                    lock = RedisLock(name)
                    if lock.acquire():
                        locks.append(lock)
                row = (
                    NodeRun.objects.select_for_update()
                    .filter(execution_id=execution.id, node=succ)
                    .values_list("status", flat=True)
                    .first()
                )
                if row != N.PENDING:
                    waiting = waiting or row in NODE_ACTIVE
                    continue
                # Statuses first; outputs are read only by the predecessor that makes the join
                # ready (in a wide fan-in the others would read every sibling's output for
                # nothing).
                missing = [p for p in preds if p not in known]
                outcomes = dict(known)
                for p, st, br in NodeRun.objects.filter(
                    execution_id=execution.id, node__in=missing
                ).values_list("node", "status", "branch"):
                    outcomes[p] = Outcome(st, br)
                verdict, fired = decide(graph, succ, outcomes)
                outputs = {p: o.output for p, o in known.items()}
                if verdict == "run" and (unread := [p for p in fired if p not in known]):
                    outputs.update(
                        NodeRun.objects.filter(
                            execution_id=execution.id, node__in=unread
                        ).values_list("node", "output")
                    )
                # Pending, and locked until this transaction ends: it stays active.
                waiting = waiting or verdict == "wait"
            if verdict == "run":
                item = queue_node(execution.id, succ, node_input(fired, outputs), graph, now)
                if item:
                    outgoing.append(item)
            elif verdict == "skip":
                if store.node_run_skip(execution_id=execution.id, node=succ, now=now):
                    known[succ] = Outcome(N.SKIPPED)
                    work.append(succ)
    return outgoing, waiting
