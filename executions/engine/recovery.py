"""The recovery pass, run by Beat every WECONNECT_RECOVERY_INTERVAL_SECONDS.

The broker is transport, not truth. This pass reads the database and repairs what transport
lost:

1. node runs ``queued``/``retrying`` and due, whose message never arrived (the broker was down
   at dispatch, lost its queue on restart, or the wait was too long for a Celery countdown):
   sent again;
2. node runs ``running`` past their lease (the worker died and its heartbeats stopped): put
   back to ``queued`` and sent again, counting a reassignment, and failed once the cap of
   WECONNECT_MAX_REASSIGNMENTS is reached;
3. executions past their deadline: timed out;
4. deferred executions that are due (a debounce window whose countdown was lost, a scheduled
   run buffered behind one that has finished): started;
5. executions queued behind a concurrency limit whose line has a free slot (a release lost to a
   crash): admitted;
6. joins counted down to 0 and still pending (the process that brought the count to 0 died
   before deciding them): queued or skipped.

Each repair is a compare-and-set, so two passes running at once, or a pass racing a late
message, do no harm: a message sent twice is claimed once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from executions import counters, store
from executions.engine import dispatch
from executions.engine.completion import execution_complete_if_done, execution_time_out_if_due
from executions.engine.routing import Finish, join_decide, node_run_finish
from executions.engine.snapshots import graph_for
from executions.engine.start import concurrency_admit, concurrency_lines, deferred_start_due
from executions.models import Execution, NodeRun
from executions.states import (
    EXECUTION_ACTIVE,
    EXECUTION_UNFINISHED,
    ExecutionStatus,
    NodeRunStatus,
)

log = logging.getLogger("weconnect.engine")
N = NodeRunStatus


@dataclass
class RecoveryReport:
    redispatched: int = 0
    reclaimed: int = 0
    lost: int = 0
    timed_out: int = 0
    deferred_started: int = 0
    admitted: int = 0
    joins_decided: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def recovery_run(*, now=None, batch: int | None = None) -> RecoveryReport:
    now = now or timezone.now()
    batch = batch or settings.WECONNECT_RECOVERY_BATCH
    report = RecoveryReport()
    report.timed_out = _time_out_due(now, batch)
    report.redispatched = _redispatch_due(now, batch)
    reclaimed, lost = _reclaim_expired(now, batch)
    report.reclaimed, report.lost = reclaimed, lost
    report.deferred_started = deferred_start_due(now=now, batch=batch)
    # A release lost to a crash (its message, or the process before sending it): admit who
    # may start in every line that has room.
    report.admitted = sum(
        concurrency_admit(workflow_id=w, key=k, now=now) for w, k in concurrency_lines()
    )
    report.joins_decided = _decide_ready_joins(batch)
    counters.record_recovery(report.as_dict())
    if any(report.as_dict().values()):
        log.info("recovery pass", extra=report.as_dict())
    return report


def _time_out_due(now, batch: int) -> int:
    ids = list(
        Execution.objects.filter(status__in=EXECUTION_UNFINISHED, deadline_at__lte=now).values_list(
            "id", flat=True
        )[:batch]
    )
    # A paused execution's deadline still applies (a query of its own: the partial index
    # above covers active executions only; paused ones are few).
    ids += list(
        Execution.objects.filter(status=ExecutionStatus.PAUSED, deadline_at__lte=now).values_list(
            "id", flat=True
        )[: max(0, batch - len(ids))]
    )
    return sum(1 for i in ids if execution_time_out_if_due(execution_id=i, now=now))


def _redispatch_due(now, batch: int) -> int:
    grace = now - timedelta(seconds=settings.WECONNECT_REDISPATCH_AFTER_SECONDS)
    # Due, and no message sent for it recently (or none at all): a message sent with a
    # countdown is expected at next_attempt_at, so that is when the grace starts.
    rows = list(
        NodeRun.objects.filter(
            status__in=[N.QUEUED, N.RETRYING],
            execution__status__in=EXECUTION_ACTIVE,
        )
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .filter(
            Q(dispatched_at__isnull=True)
            | (
                Q(dispatched_at__lt=grace)
                & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lt=grace))
            )
        )
        .select_related("execution")
        .only(
            "id",
            "node",
            "status",
            "task_id",
            "execution__id",
            "execution__snapshot_id",
            "execution__priority",
        )[:batch]
    )
    items = []
    for run in rows:
        task_id = dispatch.new_task_id()
        changed = store.node_run_redispatch(
            node_run_id=run.id, status=run.status, old_task_id=run.task_id, task_id=task_id, now=now
        )
        if changed:
            items.append(
                dispatch.for_node(
                    str(run.execution_id),
                    graph_for(run.execution.snapshot_id),
                    run.node,
                    task_id,
                    priority=run.execution.priority,
                )
            )
    sent = dispatch.send(items)
    if items:
        log.info(
            "re-dispatched node runs",
            extra={"count": sent, "node_runs": [i.node for i in items][:20]},
        )
    return sent


def _decide_ready_joins(batch: int) -> int:
    """Joins whose count reached 0 without a decision (partial index node_run_join_ready)."""
    rows = list(
        NodeRun.objects.filter(
            status=N.PENDING, predecessors_left=0, execution__status__in=EXECUTION_ACTIVE
        )
        .select_related("execution")
        .only(
            "id",
            "node",
            "execution__id",
            "execution__snapshot_id",
            "execution__parent_node_run_id",
            "execution__concurrency_key",
        )[:batch]
    )
    decided = 0
    for run in rows:
        graph = graph_for(run.execution.snapshot_id)
        if not join_decide(run.execution, graph, run.node):
            with transaction.atomic():  # skipped, and nothing else is left: maybe complete
                execution_complete_if_done(run.execution, graph, timezone.now())
        if not NodeRun.objects.filter(id=run.id, status=N.PENDING).exists():
            decided += 1
            log.warning(
                "decided a join whose decision was lost",
                extra={"execution_id": str(run.execution_id), "node": run.node},
            )
    return decided


def _reclaim_expired(now, batch: int) -> tuple[int, int]:
    rows = list(
        NodeRun.objects.filter(
            status=N.RUNNING,
            lease_expires_at__lt=now,
            execution__status__in=EXECUTION_ACTIVE,
        )
        .select_related("execution")
        .only(
            "id",
            "node",
            "attempts",
            "reassignments",
            "execution__id",
            "execution__snapshot_id",
            "execution__parent_node_run_id",
            "execution__priority",
        )[:batch]
    )
    reclaimed = lost = 0
    for run in rows:
        graph = graph_for(run.execution.snapshot_id)
        if run.reassignments >= settings.WECONNECT_MAX_REASSIGNMENTS:
            message = f"node run lost its worker {run.reassignments + 1} times"
            doc = {"error": True, "message": message, "type": "WorkerLost"}
            if node_run_finish(
                execution=run.execution,
                graph=graph,
                node=run.node,
                attempt=run.attempts,
                result=Finish(N.FAILED, doc, None, {**doc, "attempts": run.attempts}),
            ):
                lost += 1
            continue
        task_id = dispatch.new_task_id()
        with transaction.atomic():
            changed = store.node_run_reclaim(
                node_run_id=run.id, attempt=run.attempts, task_id=task_id, now=now
            )
            if changed:
                reclaimed += 1
                dispatch.send_on_commit(
                    [
                        dispatch.for_node(
                            str(run.execution_id),
                            graph,
                            run.node,
                            task_id,
                            priority=run.execution.priority,
                        )
                    ]
                )
                log.warning(
                    "reclaimed a node run whose lease expired",
                    extra={
                        "execution_id": str(run.execution_id),
                        "node": run.node,
                        "attempt": run.attempts,
                    },
                )
    return reclaimed, lost
