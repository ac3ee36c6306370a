"""What happens when a node run finishes: record it, route it, schedule what is now ready.

Most ends are one statement (autocommit): the run is recorded, the successors that have it as
their only predecessor are queued, and the joins among its successors are counted down. The
rest (a failure nobody handles, a skip to spread, one of several sinks) is one transaction, so
a worker that dies half-way leaves the run ``running`` (and recovery runs it again) rather
than a finished node with successors never scheduled.

Exactly-once scheduling of a join: a pending join keeps ``predecessors_left``, set when the
execution is created. The write that finishes a predecessor counts it down by one under the
join's row lock (a second predecessor finishing at the same moment blocks on that lock, then
counts down from the committed value), so exactly one of them brings it to 0. That one (and
only that one) reads the predecessors' outcomes, all finished now, under the row lock, and
queues the join or skips it; the ``pending -> queued`` compare-and-set makes a duplicate a
no-op. A process that dies between its count reaching 0 and that decision leaves a pending
join at 0, which the recovery pass decides. A join without a count (created before joins were
counted) is decided the older way: under its row lock, by whichever predecessor finds every
predecessor finished.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from executions import store
from executions.engine import carry, dispatch
from executions.engine.completion import (
    execution_complete_if_done,
    execution_fail_unhandled,
    on_execution_finished,
)
from executions.engine.deadlocks import retry_on_deadlock
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
    # The output's size as JSON when the task measured it (the output check).
    output_bytes: int | None = None


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
                execution, graph, node, Outcome(result.status, result.branch, result.output), now
            )
            if outgoing:
                dispatch.send_on_commit(outgoing)
            elif not waiting:
                # A join left waiting is itself an active run, so the execution cannot be done:
                # the check (and its lock on the execution row, which every branch of a wide
                # fan-in would otherwise take in turn) would find exactly that.
                execution_complete_if_done(execution, graph, now)
            return True

    return retry_on_deadlock(work)


def _finish_sink(
    execution: Execution, node: str, attempt: int, result: Finish, pure: store.PureStart | None
) -> bool:
    # One statement in autocommit: a deadlock (this run's row, then the execution's, against a
    # transaction taking them the other way round, e.g. an unpause) aborts all of it, so it is
    # simply run again.
    done, finished, parent = retry_on_deadlock(
        lambda: store.node_run_end_and_complete(
            execution_id=execution.id,
            node=node,
            attempt=attempt,
            output=result.output,
            branch=result.branch,
            execution_output={node: result.output},
            now=timezone.now(),
            pure=pure,
        )
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
    None when the general path is needed (a skip among the successors, one of several sinks,
    an unhandled failure)."""
    if result.status == N.FAILED and not graph.has_error_route(node):
        return None
    successors = graph.successors(node)
    if not successors:
        if result.status == N.SUCCEEDED and graph.sink_keys() == [node]:
            return _finish_sink(execution, node, attempt, result, pure)
        return None
    outcome = {node: Outcome(result.status, result.branch, result.output)}
    singles: list[str] = []
    joins: list[str] = []
    for succ in successors:
        if len(graph.predecessors(succ)) > 1:
            joins.append(succ)  # counted down whatever fired: decided when all have finished
        elif decide(graph, succ, outcome)[0] == "run":
            singles.append(succ)
        else:
            return None  # a skip to spread
    now = timezone.now()
    done, status, queued, counted, ids = retry_on_deadlock(
        lambda: store.node_run_end_and_queue(
            execution_id=execution.id,
            node=node,
            attempt=attempt,
            status=result.status,
            output=result.output,
            branch=result.branch,
            error=result.error,
            now=now,
            successors=[(s, dispatch.new_task_id()) for s in singles],
            joins=joins,
            pure=pure,
        )
    )
    if not done:
        return False
    if queued:
        items = []
        for n, t in queued:
            item = dispatch.for_node(str(execution.id), graph, n, t)
            if item.pure:
                # Its input is this run's output (it has one predecessor, whose connection fired).
                carried = carry.payload(
                    execution, ids[n], result.output, now, input_bytes=result.output_bytes
                )
                item = dataclasses.replace(item, run=carried)
            items.append(item)
        dispatch.send(items)
    if status not in EXECUTION_ACTIVE:
        return True
    active = bool(queued) or any(left > 0 for left in counted.values())
    for join in joins:
        # Brought to 0 by this statement, or not counted (no count kept, or not pending).
        if counted.get(join, 0) == 0:
            active = join_decide(execution, graph, join) or active
    if not active:
        # Nothing was pending after all (successors reused by a from_failed retry): the
        # execution may be complete now.
        with transaction.atomic():
            execution_complete_if_done(execution, graph, timezone.now())
    return True


def join_decide(execution: Execution, graph: Graph, join: str) -> bool:
    """Queue or skip ``join`` if it is pending and every predecessor has finished (its count
    reached 0, or it keeps none), under its row lock, in a transaction of its own. Returns
    whether anything of the execution is left active because of it (the join queued or still
    waiting, or what its skip made ready): when not, the caller checks for completion."""

    def work() -> bool:
        with transaction.atomic():
            now = timezone.now()
            row = (
                NodeRun.objects.select_for_update()
                .filter(execution_id=execution.id, node=join)
                .values_list("status", flat=True)
                .first()
            )
            if row != N.PENDING:
                return row in NODE_ACTIVE
            status = (
                Execution.objects.filter(id=execution.id).values_list("status", flat=True).first()
            )
            if status not in EXECUTION_ACTIVE:
                return True  # a stopped execution schedules nothing, and is not completed here
            verdict, fired, outputs = _join_verdict(execution, graph, join, {})
            if verdict == "wait":
                return True
            if verdict == "run":
                item = queue_node(execution.id, join, node_input(fired, outputs), graph, now)
                if item:
                    dispatch.send_on_commit([item])
                return True
            if not store.node_run_skip(execution_id=execution.id, node=join, now=now):
                return False
            outgoing, waiting = _propagate(execution, graph, join, Outcome(N.SKIPPED), now)
            dispatch.send_on_commit(outgoing)
            return bool(outgoing) or waiting

    return retry_on_deadlock(work)


def _join_verdict(
    execution: Execution, graph: Graph, join: str, known: dict[str, Outcome]
) -> tuple[str, list[str], dict[str, Any]]:
    """Whether ``join`` runs, from its predecessors' outcomes (``known`` ones and the rest read
    here; the caller holds the join's row lock), and the outputs its input is made of."""
    missing = [p for p in graph.predecessors(join) if p not in known]
    outcomes = dict(known)
    # Statuses first; outputs are read only when the join runs, and only of those that fired.
    for p, st, br in NodeRun.objects.filter(
        execution_id=execution.id, node__in=missing
    ).values_list("node", "status", "branch"):
        outcomes[p] = Outcome(st, br)
    verdict, fired = decide(graph, join, outcomes)
    outputs = {p: o.output for p, o in known.items()}
    if verdict == "run" and (unread := [p for p in fired if p not in known]):
        outputs.update(
            NodeRun.objects.filter(execution_id=execution.id, node__in=unread).values_list(
                "node", "output"
            )
        )
    return verdict, fired, outputs


def _propagate(
    execution: Execution, graph: Graph, node: str, outcome: Outcome, now
) -> tuple[list[dispatch.Dispatch], bool]:
    """Queue or skip the successors of ``node`` (and, through skips, theirs). Returns the
    messages to send and whether a join was seen still active under its row lock."""
    outgoing: list[dispatch.Dispatch] = []
    # Joins left active: counted down but waiting for other predecessors (which a later step
    # of this same pass may still count down to 0 and decide), or not pending any more.
    waiting: set[str] = set()
    known: dict[str, Outcome] = {node: outcome}
    work = [node]
    while work:
        current = work.pop(0)
        for succ in graph.successors(current):  # sorted: a stable lock order
            if len(graph.predecessors(succ)) == 1:
                # Only `current` can make this node ready: the compare-and-set suffices.
                verdict, fired = decide(graph, succ, known)
                outputs = {current: known[current].output}
            else:
                left = store.node_run_count_down(execution_id=execution.id, node=succ)
                if left:
                    waiting.add(succ)  # other predecessors still to finish: it stays pending
                    continue
                if left is None:
                    # Not pending, or a join that keeps no count: look under its row lock.
                    row = (
                        NodeRun.objects.select_for_update()
                        .filter(execution_id=execution.id, node=succ)
                        .values_list("status", flat=True)
                        .first()
                    )
                    if row != N.PENDING:
                        if row in NODE_ACTIVE:
                            waiting.add(succ)
                        continue
                verdict, fired, outputs = _join_verdict(execution, graph, succ, known)
                # Pending, and locked until this transaction ends: it stays active.
                if verdict == "wait":
                    waiting.add(succ)
                else:
                    waiting.discard(succ)
            if verdict == "run":
                item = queue_node(execution.id, succ, node_input(fired, outputs), graph, now)
                if item:
                    outgoing.append(item)
            elif verdict == "skip":
                if store.node_run_skip(execution_id=execution.id, node=succ, now=now):
                    known[succ] = Outcome(N.SKIPPED)
                    work.append(succ)
    return outgoing, bool(waiting)
