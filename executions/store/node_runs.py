"""Status writes of node runs: one function per transition of NODE_RUN_TRANSITIONS.

On PostgreSQL the claim and the two ends of a hop that cost the most round trips are single
statements (:mod:`executions.store.sql`, generated from the same table); every other database
(SQLite for ``make run`` without DATABASE_URL) takes the ORM form of the same compare-and-set.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import F, Q

from executions.models import Execution, NodeRun, Workflow
from executions.states import (
    EXECUTION_ACTIVE,
    NODE_RUN_TRANSITIONS,
    ExecutionStatus,
    NodeRunStatus,
    sources_for,
)
from executions.store import sql
from executions.store.attempts import worker_name
from executions.store.transition import transition

N = NodeRunStatus
T = NODE_RUN_TRANSITIONS

# What the task body reads of a claimed run (the ORM forms fetch exactly this).
_CLAIMED_FIELDS = (
    "id",
    "node",
    "attempts",
    "input",
    "state",
    "retry_delays",
    "attempt_log",
    "reassignments",
    "execution__id",
    "execution__status",
    "execution__input",
    "execution__snapshot_id",
    "execution__depth",
    "execution__parent_node_run_id",
    "execution__concurrency_key",
    "execution__workflow__owner_id",
    "execution__workflow__id",
    "queued_at",
    "started_at",
)


def _json(value: Any) -> Any:
    # Django reads jsonb as text through its psycopg configuration; decode it here.
    return json.loads(value) if isinstance(value, str) else value


def _jsonb(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _of_execution(execution_id, **conditions):
    # The execution's conditions go in a subquery on the execution alone, never as a join: an
    # UPDATE filtered through a join is rewritten by Django as `id IN (SELECT ... self-join)`,
    # and a second claim blocked on the row lock would then recheck the run's status on the
    # stale copy in that subquery and claim the run a second time. Conditions on the row
    # itself are rechecked on its committed version, so one of two racing writes wins.
    return Execution.objects.filter(id=execution_id, **conditions).values("id")


def _fetch_claimed(execution_id, node: str) -> NodeRun:
    return (
        NodeRun.objects.select_related("execution", "execution__workflow")
        .only(*_CLAIMED_FIELDS)
        .get(execution_id=execution_id, node=node)
    )


def _claim_postgres(execution_id, node: str, task_id: str, now, lease, not_before):
    with connection.cursor() as cursor:
        cursor.execute(
            sql.CLAIM,
            {
                "now": now,
                "lease": lease,
                "task_id": task_id,
                "execution_id": execution_id,
                "node": node,
                "not_before": not_before,
                "worker": worker_name(),
            },
        )
        row = cursor.fetchone()
    if row is None:
        return None
    f = dict(zip(_ROW, row[:-1], strict=True))
    if row[-1]:  # the same statement started the execution
        f["ex_status"] = ExecutionStatus.RUNNING
    return _run(execution_id, node, N.RUNNING, task_id=task_id, **f)


# The columns the claim (sql.CLAIM, followed by whether it started the execution) and the peek
# (sql.PEEK, without started_at) return, by the names _run takes.
_ROW = (
    "run_id",
    "attempts",
    "input_",
    "state",
    "delays",
    "reassignments",
    "queued_at",
    "started_at",
    "ex_status",
    "ex_input",
    "snapshot_id",
    "depth",
    "parent_id",
    "workflow_id",
    "owner_id",
    "attempt_log",
    "concurrency_key",
)
_PEEK_ROW = tuple(c for c in _ROW if c != "started_at")


def _run(execution_id, node: str, status: str, **f) -> NodeRun:
    # The in-memory run (and its execution and workflow) a task body works on, from a row of
    # the claim or the peek.
    workflow = Workflow(id=f["workflow_id"], owner_id=f["owner_id"])
    execution = Execution(
        id=execution_id if not isinstance(execution_id, str) else uuid.UUID(execution_id),
        status=f["ex_status"],
        input=_json(f["ex_input"]),
        snapshot_id=f["snapshot_id"],
        depth=f["depth"],
        parent_node_run_id=f["parent_id"],
        concurrency_key=f["concurrency_key"],
        workflow=workflow,
    )
    return NodeRun(
        id=f["run_id"],
        execution=execution,
        node=node,
        status=status,
        attempts=f["attempts"],
        input=_json(f["input_"]),
        state=_json(f["state"]),
        retry_delays=_json(f["delays"]) or [],
        attempt_log=_json(f["attempt_log"]) or [],
        reassignments=f["reassignments"],
        queued_at=f["queued_at"],
        started_at=f["started_at"],
        task_id=f["task_id"],
    )


@dataclass(frozen=True)
class PureStart:
    """What the one write of a pure node type's hop needs about the run it read (see
    :func:`node_run_peek`): when the attempt started, for which message, and how early a
    due run may be taken."""

    started_at: datetime
    task_id: str
    not_before: datetime


def node_run_peek(*, execution_id, node: str, now, not_before) -> NodeRun | None:
    """PostgreSQL: read a queued, due run of an active execution within its deadline, with
    what its node needs, writing nothing; None when there is none. The run comes back as the
    attempt it would be (``attempts`` counted, ``started_at`` now) but still ``queued``: only
    the statement that records its end (``pure=``) makes it so, if it is still queued then."""
    with connection.cursor() as cursor:
        cursor.execute(
            sql.PEEK,
            {"execution_id": execution_id, "node": node, "now": now, "not_before": not_before},
        )
        row = cursor.fetchone()
    if row is None:
        return None
    f = dict(zip(_PEEK_ROW, row, strict=True))
    f["attempts"] += 1
    return _run(execution_id, node, N.QUEUED, started_at=now, task_id=None, **f)


def node_run_claim(
    *, execution_id, node: str, task_id: str, now, lease, not_before
) -> NodeRun | None:
    """queued | retrying (due by ``not_before``) -> running, counting an attempt, if the
    execution is active and within its deadline. Returns the claimed run with its execution
    (on PostgreSQL the same statement also starts a pending execution), or None."""
    if connection.vendor == "postgresql":
        return _claim_postgres(execution_id, node, task_id, now, lease, not_before)
    claimed = transition(
        NodeRun.objects.filter(
            execution_id__in=_of_execution(
                execution_id, status__in=EXECUTION_ACTIVE, deadline_at__gt=now
            ),
            node=node,
        ).filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=not_before)),
        N.RUNNING,
        table=T,
        sources=[N.QUEUED, N.RETRYING],
        attempts=F("attempts") + 1,
        started_at=now,
        lease_expires_at=lease,
        task_id=task_id,
        next_attempt_at=None,
        worker=worker_name(),
    )
    return _fetch_claimed(execution_id, node) if claimed else None


def node_run_take_over(
    *, execution_id, node: str, task_id: str, now, lease, max_reassignments: int
) -> NodeRun | None:
    """running -> running for a redelivered message of the same task whose process died,
    counting an attempt and a reassignment (below ``max_reassignments``)."""
    taken = transition(
        NodeRun.objects.filter(
            execution_id__in=_of_execution(
                execution_id, status__in=EXECUTION_ACTIVE, deadline_at__gt=now
            ),
            node=node,
            task_id=task_id,
            reassignments__lt=max_reassignments,
        ),
        N.RUNNING,
        table=T,
        sources=[N.RUNNING],
        attempts=F("attempts") + 1,
        reassignments=F("reassignments") + 1,
        started_at=now,
        lease_expires_at=lease,
    )
    return _fetch_claimed(execution_id, node) if taken else None


def node_run_extend_lease(*, node_run_id: int, attempt: int, lease) -> bool:
    """A heartbeat: a running attempt keeps its lease (no status change)."""
    return bool(
        NodeRun.objects.filter(id=node_run_id, status=N.RUNNING, attempts=attempt).update(
            lease_expires_at=lease
        )
    )


def node_runs_create(
    *,
    execution: Execution,
    graph,
    reused: dict[str, NodeRun],
    queue: dict[str, Any],
    skip: list[str],
    task_ids: dict[str, str],
    now,
) -> list[NodeRun]:
    """The node runs of a new execution, in one INSERT: reused ones succeeded (copied from an
    earlier execution), the start nodes queued with their ``task_ids``, the nodes known to
    be skipped skipped, the rest pending; a pending join counts its predecessors that are not
    finished (reused or skipped) yet. Returns the rows as written (with their ids)."""
    rows = []
    finished = set(reused) | set(skip)
    for key, spec in graph.nodes.items():
        row = NodeRun(execution=execution, node=key, node_type=spec.type)
        preds = graph.predecessors(key)
        if len(preds) > 1 and key not in reused and key not in queue and key not in skip:
            row.predecessors_left = sum(1 for p in preds if p not in finished)
        if key in reused:
            old = reused[key]
            row.status, row.input, row.output, row.branch = (
                N.SUCCEEDED,
                old.input,
                old.output,
                old.branch,
            )
            row.attempts, row.started_at, row.finished_at = 0, old.started_at, old.finished_at
        elif key in queue:
            row.status, row.input, row.queued_at, row.dispatched_at = N.QUEUED, queue[key], now, now
            row.task_id = task_ids[key]
        elif key in skip:
            row.status, row.finished_at = N.SKIPPED, now
        rows.append(row)
    return NodeRun.objects.bulk_create(rows)


def node_run_queue(*, execution_id, node: str, input: Any, task_id: str, now) -> bool:
    """pending -> queued with its input, when its predecessors made it ready."""
    return bool(
        transition(
            NodeRun.objects.filter(execution_id=execution_id, node=node),
            N.QUEUED,
            table=T,
            sources=[N.PENDING],
            input=input,
            queued_at=now,
            dispatched_at=now,
            task_id=task_id,
        )
    )


def node_run_skip(*, execution_id, node: str, now) -> bool:
    """pending -> skipped, when no connection into it fired."""
    return bool(
        transition(
            NodeRun.objects.filter(execution_id=execution_id, node=node),
            N.SKIPPED,
            table=T,
            sources=[N.PENDING],
            finished_at=now,
        )
    )


def node_run_end(
    *, execution_id, node: str, attempt: int, status: str, output, branch, error, now
) -> bool:
    """running (attempt ``attempt``) -> succeeded | failed."""
    return bool(
        transition(
            NodeRun.objects.filter(execution_id=execution_id, node=node, attempts=attempt),
            status,
            table=T,
            sources=[N.RUNNING],
            output=output,
            branch=branch,
            error=error,
            finished_at=now,
            lease_expires_at=None,
        )
    )


def node_run_end_and_queue(
    *,
    execution_id,
    node: str,
    attempt: int,
    status: str,
    output,
    branch,
    error,
    now,
    successors: list[tuple[str, str]],
    joins: list[str] = (),
    pure: PureStart | None = None,
) -> tuple[bool, str | None, list[tuple[str, str]], dict[str, int], dict[str, int]]:
    """PostgreSQL, autocommit: :func:`node_run_end`, :func:`node_run_queue` of ``successors``
    ((node, task id) pairs, each with this node as its only predecessor) and
    :func:`node_run_count_down` of ``joins`` in one statement; successors are queued and joins
    counted only if the end was recorded and the execution is active. With ``pure``, the run
    ends from ``queued`` (attempt ``attempt`` not yet counted, see :func:`node_run_peek`) and
    a pending execution starts, in the same statement. Returns (ended, the execution's status,
    the (node, task id) pairs queued, {join: predecessors left} for the joins counted down,
    {node: node run id} of those queued)."""
    # Raises unless the transition is in the table.
    sources_for(T, status, [N.QUEUED] if pure else [N.RUNNING])
    with connection.cursor() as cursor:
        cursor.execute(
            sql.PURE_END_AND_QUEUE if pure else sql.END_AND_QUEUE,
            {
                "status": status,
                "output": _jsonb(output),
                "branch": branch,
                "error": _jsonb(error),
                "now": now,
                "execution_id": str(execution_id),
                "node": node,
                "attempt": attempt,
                "succ_nodes": [n for n, _ in successors],
                "succ_tasks": [t for _, t in successors],
                "join_nodes": list(joins),
                **_pure_params(pure),
            },
        )
        done, ex_status, queued_nodes, queued_tasks, counted, left, ids = cursor.fetchone()
    return (
        bool(done),
        ex_status,
        list(zip(queued_nodes, queued_tasks, strict=True)),
        dict(zip(counted, left, strict=True)),
        dict(zip(queued_nodes, ids, strict=True)),
    )


def node_run_count_down(*, execution_id, node: str) -> int | None:
    """One predecessor of the join ``node`` has finished: its count goes down by one, under
    the join's row lock (held until the caller's transaction ends). Returns the count left, or
    None when the join is not pending or keeps no count (a run created before joins were
    counted): the caller then reads the predecessors under the lock instead. No status
    changes."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE executions_noderun SET predecessors_left = predecessors_left - 1"
            " WHERE execution_id = %s AND node = %s AND status = %s AND predecessors_left > 0"
            " RETURNING predecessors_left",
            [str(execution_id), node, N.PENDING],
        )
        row = cursor.fetchone()
    return None if row is None else row[0]


def node_runs_recount(*, execution_id, counts: dict[str, int]) -> None:
    """Set the counts of pending joins anew (``{join: predecessors not finished}``), read by
    the caller under the joins' row locks: an unpause, after runs that finished while paused
    routed nothing. No status changes."""
    for node, left in counts.items():
        NodeRun.objects.filter(execution_id=execution_id, node=node, status=N.PENDING).update(
            predecessors_left=left
        )


def node_run_end_and_complete(
    *,
    execution_id,
    node: str,
    attempt: int,
    output,
    branch,
    execution_output,
    now,
    pure: PureStart | None = None,
) -> tuple[bool, bool, int | None]:
    """PostgreSQL, autocommit: running (or, with ``pure``, queued) -> succeeded for the single
    sink of a workflow, and its execution pending | running -> succeeded with
    ``execution_output``, in one statement. Returns (ended, execution succeeded, its parent
    node run id)."""
    sources_for(T, N.SUCCEEDED, [N.QUEUED] if pure else [N.RUNNING])
    with connection.cursor() as cursor:
        cursor.execute(
            sql.PURE_END_AND_COMPLETE if pure else sql.END_AND_COMPLETE,
            {
                "status": N.SUCCEEDED,
                "output": _jsonb(output),
                "branch": branch,
                "error": None,
                "now": now,
                "execution_id": str(execution_id),
                "node": node,
                "attempt": attempt,
                "execution_output": json.dumps(execution_output),
                **_pure_params(pure),
            },
        )
        done, finished, parent = cursor.fetchone()
    return bool(done), bool(finished), parent


def _pure_params(pure: PureStart | None) -> dict[str, Any]:
    if pure is None:
        return {"started_at": None}
    return {
        "started_at": pure.started_at,
        "task_id": pure.task_id,
        "not_before": pure.not_before,
        "worker": worker_name(),
    }


def node_run_reschedule(
    *,
    node_run_id: int,
    attempt: int,
    status: str,
    next_attempt_at,
    task_id: str,
    dispatched_at,
    **fields,
) -> bool:
    """running (attempt ``attempt``) -> retrying (a retry) | queued (a wait), due at
    ``next_attempt_at``; ``fields`` carry the error or the wait's state."""
    return bool(
        transition(
            NodeRun.objects.filter(id=node_run_id, attempts=attempt),
            status,
            table=T,
            sources=[N.RUNNING],
            next_attempt_at=next_attempt_at,
            task_id=task_id,
            dispatched_at=dispatched_at,
            lease_expires_at=None,
            **fields,
        )
    )


def node_run_record_start(*, node_run_id: int, attempt: int, started_at) -> bool:
    """A running attempt's recorded start (a rate-limited run: the grant of its token); it
    clears ``waiting_for``. No status changes."""
    return bool(
        NodeRun.objects.filter(id=node_run_id, status=N.RUNNING, attempts=attempt).update(
            started_at=started_at, waiting_for=None
        )
    )


def node_run_wake(*, node_run_id: int, execution_id, task_id: str, now) -> bool:
    """queued -> queued, due now, for a parked run of an active execution (one due later).
    A run already due is left alone: its message is on its way (or the recovery pass sends it
    again), and many wakes at once (the children of a for_each finishing) cost one run. When
    it is still running (it has not parked yet) it gets a mark its park step sees, and False
    is returned."""
    changed = transition(
        NodeRun.objects.filter(
            id=node_run_id,
            execution_id__in=_of_execution(execution_id, status__in=EXECUTION_ACTIVE),
            next_attempt_at__gt=now,
        ),
        N.QUEUED,
        table=T,
        sources=[N.QUEUED],
        next_attempt_at=now,
        dispatched_at=now,
        task_id=task_id,
    )
    if not changed:
        NodeRun.objects.filter(id=node_run_id, status=N.RUNNING).update(next_attempt_at=now)
    return bool(changed)


def node_run_reclaim(*, node_run_id: int, attempt: int, task_id: str, now) -> bool:
    """running past its lease -> queued, counting a reassignment (its worker died)."""
    return bool(
        transition(
            NodeRun.objects.filter(id=node_run_id, attempts=attempt, lease_expires_at__lt=now),
            N.QUEUED,
            table=T,
            sources=[N.RUNNING],
            reassignments=F("reassignments") + 1,
            task_id=task_id,
            dispatched_at=now,
            queued_at=now,
            lease_expires_at=None,
            next_attempt_at=None,
        )
    )


def node_run_redispatch(*, node_run_id: int, status: str, old_task_id, task_id: str, now) -> bool:
    """A new message for a due queued | retrying run whose message was lost (no status
    change; the old task id makes two recovery passes send it once)."""
    return bool(
        NodeRun.objects.filter(id=node_run_id, status=status, task_id=old_task_id).update(
            task_id=task_id, dispatched_at=now
        )
    )


def node_runs_cancel(*, execution_id, include_running: bool, now) -> list[str]:
    """pending | queued | retrying (| running) -> cancelled for every unfinished run of an
    execution that stopped. Returns the task ids of the runs found, to revoke."""
    targets = [N.PENDING, N.QUEUED, N.RETRYING] + ([N.RUNNING] if include_running else [])
    runs = NodeRun.objects.filter(execution_id=execution_id)
    task_ids = [t for t in runs.filter(status__in=targets).values_list("task_id", flat=True) if t]
    transition(
        runs,
        N.CANCELLED,
        table=T,
        sources=targets,
        finished_at=now,
        lease_expires_at=None,
        next_attempt_at=None,
    )
    return task_ids
