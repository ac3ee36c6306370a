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

import json
import logging
from dataclasses import dataclass
from typing import Any

from django.db import OperationalError, connection, transaction
from django.utils import timezone

from executions.engine import dispatch, notify
from executions.engine.locks import RedisLock, key
from executions.graph import Graph, Outcome, decide, node_input
from executions.models import Execution, NodeRun
from executions.states import (
    EXECUTION_ACTIVE,
    EXECUTION_TRANSITIONS,
    NODE_ACTIVE,
    NODE_RUN_TRANSITIONS,
    ExecutionStatus,
    NodeRunStatus,
    transition,
)

log = logging.getLogger("weconnect.engine")
N = NodeRunStatus


@dataclass
class Finish:
    status: str  # succeeded | failed
    output: Any
    branch: str | None = None
    error: Any = None


def retry_on_deadlock(fn, attempts: int = 5):
    """Run ``fn`` (which opens its own transaction) again if Postgres aborted it as a deadlock
    victim or a serialization failure; everything in it is a compare-and-set, so rerunning is
    safe."""
    for i in range(attempts):
        try:
            return fn()
        except OperationalError as exc:
            cause = getattr(exc, "__cause__", None)
            sqlstate = getattr(cause, "sqlstate", None)
            if sqlstate not in ("40P01", "40001") or i == attempts - 1:
                raise
            log.info("transaction retried after %s", sqlstate)


def queue_node(
    execution_id, node: str, node_input_value: Any, graph: Graph, now
) -> dispatch.Dispatch | None:
    task_id = dispatch.new_task_id()
    changed = transition(
        NodeRun.objects.filter(execution_id=execution_id, node=node),
        N.QUEUED,
        table=NODE_RUN_TRANSITIONS,
        sources=[N.PENDING],
        input=node_input_value,
        queued_at=now,
        dispatched_at=now,
        task_id=task_id,
    )
    if not changed:
        return None
    return dispatch.Dispatch(str(execution_id), node, task_id, graph.nodes[node].timeout_seconds)


def node_run_finish(
    *, execution: Execution, graph: Graph, node: str, attempt: int, result: Finish
) -> bool:
    """Record the end of attempt ``attempt`` of ``node`` and advance the execution.

    Returns False when the run had already moved on (cancelled, timed out, or taken over by a
    redelivered message after its worker was presumed dead): the result is then discarded.
    """
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        fast = _finish_linear(execution, graph, node, attempt, result)
        if fast is not None:
            return fast
    locks: list[RedisLock] = []

    def work() -> bool:
        with transaction.atomic():
            now = timezone.now()
            changed = NodeRun.objects.filter(
                execution_id=execution.id, node=node, status=N.RUNNING, attempts=attempt
            ).update(
                status=result.status,
                output=result.output,
                branch=result.branch,
                error=result.error,
                finished_at=now,
                lease_expires_at=None,
            )
            if not changed:
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


# The common hop in one statement (PostgreSQL, autocommit): record the finished run and queue
# its successors when each of them has this node as its only predecessor and its connection
# fired. Every part is a compare-and-set: the queue step only happens if this run was still
# ours (`done`) and the execution is active, and only moves successors still `pending`. A
# cancel racing it is ordered by the successors' row locks exactly as in the general path.
_FINISH_LINEAR_SQL = """
WITH done AS (
    UPDATE executions_noderun
       SET status = %(status)s, output = %(output)s::jsonb, branch = %(branch)s,
           error = %(error)s::jsonb, finished_at = %(now)s, lease_expires_at = NULL
     WHERE execution_id = %(execution_id)s AND node = %(node)s
       AND status = 'running' AND attempts = %(attempt)s
    RETURNING 1
), ex AS (
    SELECT status FROM executions_execution WHERE id = %(execution_id)s
), queued AS (
    UPDATE executions_noderun AS nr
       SET status = 'queued', input = %(output)s::jsonb, queued_at = %(now)s,
           dispatched_at = %(now)s, task_id = v.task_id
      FROM (SELECT unnest(%(succ_nodes)s::text[]) AS node, unnest(%(succ_tasks)s::text[]) AS task_id) AS v
     WHERE nr.execution_id = %(execution_id)s AND nr.node = v.node AND nr.status = 'pending'
       AND EXISTS (SELECT 1 FROM done)
       AND (SELECT status FROM ex) IN ('pending', 'running')
    RETURNING nr.node, nr.task_id
)
SELECT (SELECT count(*) FROM done), (SELECT status FROM ex),
       ARRAY(SELECT node FROM queued), ARRAY(SELECT task_id FROM queued)
"""


def _jsonb(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


# The last node of a workflow with a single sink, in one statement. Every node of such a
# graph is an ancestor of the sink, and a node only runs once all its predecessors have
# finished, so when the sink succeeds nothing else can be active: the execution is complete.
_FINISH_SINK_SQL = """
WITH done AS (
    UPDATE executions_noderun
       SET status = 'succeeded', output = %(output)s::jsonb, branch = %(branch)s,
           error = NULL, finished_at = %(now)s, lease_expires_at = NULL
     WHERE execution_id = %(execution_id)s AND node = %(node)s
       AND status = 'running' AND attempts = %(attempt)s
    RETURNING 1
), fin AS (
    UPDATE executions_execution
       SET status = 'succeeded', output = %(execution_output)s::jsonb, finished_at = %(now)s
     WHERE id = %(execution_id)s AND status IN ('pending', 'running')
       AND EXISTS (SELECT 1 FROM done)
    RETURNING parent_node_run_id
)
SELECT (SELECT count(*) FROM done), (SELECT count(*) FROM fin),
       (SELECT parent_node_run_id FROM fin)
"""


def _finish_sink(execution: Execution, node: str, attempt: int, result: Finish) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            _FINISH_SINK_SQL,
            {
                "output": _jsonb(result.output),
                "branch": result.branch,
                "now": timezone.now(),
                "execution_id": str(execution.id),
                "node": node,
                "attempt": attempt,
                "execution_output": json.dumps({node: result.output}),
            },
        )
        done, finished, parent = cursor.fetchone()
    if finished:
        log.info("execution succeeded", extra={"execution_id": str(execution.id)})
        _on_execution_finished(execution.id, parent)
    return bool(done)


def _finish_linear(
    execution: Execution, graph: Graph, node: str, attempt: int, result: Finish
) -> bool | None:
    """The fast path of :func:`node_run_finish`, or None when the general path is needed
    (a join or a skip among the successors, one of several sinks, an unhandled failure)."""
    if result.status == N.FAILED and not graph.has_error_route(node):
        return None
    successors = graph.successors(node)
    if not successors:
        if result.status == N.SUCCEEDED and graph.sink_keys() == [node]:
            return _finish_sink(execution, node, attempt, result)
        return None
    outcome = {node: Outcome(result.status, result.branch, result.output)}
    for succ in successors:
        if len(graph.predecessors(succ)) != 1 or decide(graph, succ, outcome)[0] != "run":
            return None
    tasks = [dispatch.new_task_id() for _ in successors]
    with connection.cursor() as cursor:
        cursor.execute(
            _FINISH_LINEAR_SQL,
            {
                "status": result.status,
                "output": _jsonb(result.output),
                "branch": result.branch,
                "error": _jsonb(result.error),
                "now": timezone.now(),
                "execution_id": str(execution.id),
                "node": node,
                "attempt": attempt,
                "succ_nodes": successors,
                "succ_tasks": tasks,
            },
        )
        done, status, queued_nodes, queued_tasks = cursor.fetchone()
    if not done:
        return False
    if queued_nodes:
        dispatch.send(
            [
                dispatch.Dispatch(str(execution.id), n, t, graph.nodes[n].timeout_seconds)
                for n, t in zip(queued_nodes, queued_tasks, strict=True)
            ]
        )
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
                if transition(
                    NodeRun.objects.filter(execution_id=execution.id, node=succ),
                    N.SKIPPED,
                    table=NODE_RUN_TRANSITIONS,
                    sources=[N.PENDING],
                    finished_at=now,
                ):
                    known[succ] = Outcome(N.SKIPPED)
                    work.append(succ)
    return outgoing, waiting


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
    done = transition(
        Execution.objects.filter(id=execution.id),
        ExecutionStatus.SUCCEEDED,
        table=EXECUTION_TRANSITIONS,
        output={k: output[k] for k in sinks if k in output},
        finished_at=now,
    )
    if done:
        log.info("execution succeeded", extra={"execution_id": str(execution.id)})
        _on_execution_finished(execution.id, execution.parent_node_run_id)
    return bool(done)


def execution_stop(
    execution_id, *, status: str, error: Any, now=None, include_running: bool
) -> bool:
    """Move an active execution to a terminal ``status`` and cancel its unfinished node runs
    (running ones too when ``include_running``); queued tasks are revoked after commit.
    Must be called inside a transaction."""
    now = now or timezone.now()
    changed = transition(
        Execution.objects.filter(id=execution_id),
        status,
        table=EXECUTION_TRANSITIONS,
        error=error,
        finished_at=now,
    )
    if not changed:
        return False
    targets = [N.PENDING, N.QUEUED, N.RETRYING] + ([N.RUNNING] if include_running else [])
    runs = NodeRun.objects.filter(execution_id=execution_id, status__in=targets)
    task_ids = [t for t in runs.values_list("task_id", flat=True) if t]
    transition(
        runs,
        N.CANCELLED,
        table=NODE_RUN_TRANSITIONS,
        finished_at=now,
        lease_expires_at=None,
        next_attempt_at=None,
    )
    transaction.on_commit(lambda: dispatch.revoke(task_ids))
    parent = (
        Execution.objects.filter(id=execution_id)
        .values_list("parent_node_run_id", flat=True)
        .first()
    )
    _on_execution_finished(execution_id, parent)
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


def _on_execution_finished(execution_id, parent_node_run_id) -> None:
    # Every terminal transition of an execution passes here: synchronous webhooks wait for it.
    transaction.on_commit(lambda: notify.publish_finished(execution_id))
    if parent_node_run_id:
        from executions.services.executions import node_run_wake

        transaction.on_commit(lambda: node_run_wake(node_run_id=parent_node_run_id))
