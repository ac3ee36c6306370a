"""Resuming waits: the API, the resume link, events and the admin buttons all come here.

At most once: every way of resuming and the time-out end in the same compare-and-set on the
wait row (``UPDATE ... WHERE outcome IS NULL``); the first one to commit wins. The payload and
the wake of the run are one transaction (engine/wake.py), so nothing is lost if the process
dies right after the commit: the run is due in the database and recovery sends it.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from executions.engine.wake import node_run_wake_locked
from executions.events.models import Event, EventWait
from executions.events.waits import NotWaiting, PayloadInvalid, payload_errors
from executions.models import Execution, NodeRun
from executions.states import EXECUTION_ACTIVE, NodeRunStatus

N = NodeRunStatus


def wait_resume(
    *,
    wait: EventWait,
    payload: Any,
    source: str,
    event: Event | None = None,
    now=None,
) -> bool:
    """Store ``payload`` as the wait's outcome and wake its run, in one transaction. Returns
    False when another resume, the time-out or a cancel got there first (or the execution is
    no longer active): the payload is then not stored."""
    return bool(waits_resume(waits=[wait], payload=payload, source=source, event=event, now=now))


# Waits resumed per transaction by one event: one commit for many, without holding many row
# locks for long.
RESUME_CHUNK = 100


def waits_resume(
    *,
    waits: list[EventWait],
    payload: Any,
    source: str,
    event: Event | None = None,
    now=None,
) -> list[EventWait]:
    """:func:`wait_resume` for many waits (an event matching many waiters); returns the ones
    this call resumed. Locks are taken wait row first, then its node run row, everywhere,
    so concurrent resumes cannot deadlock."""
    now = now or timezone.now()
    resumed: list[EventWait] = []
    for i in range(0, len(waits), RESUME_CHUNK):
        with transaction.atomic():
            for wait in waits[i : i + RESUME_CHUNK]:
                if _resume_one(wait, payload, source, event, now):
                    node_run_wake_locked(node_run_id=wait.node_run_id, now=now)
                    resumed.append(wait)
    return resumed


def _resume_one(wait: EventWait, payload: Any, source: str, event: Event | None, now) -> bool:
    return bool(
        EventWait.objects.filter(
            Q(pk=wait.pk)
            & Q(outcome__isnull=True)
            & Q(until__gt=now)
            # Subqueries, not joins: the wait row's own conditions are rechecked on its
            # committed version when a concurrent resume holds the row (see store.node_runs._of_execution).
            & Q(
                execution_id__in=Execution.objects.filter(
                    id=wait.execution_id, status__in=EXECUTION_ACTIVE
                ).values("id")
            )
            & Q(
                node_run_id__in=NodeRun.objects.filter(
                    id=wait.node_run_id, status__in=[N.QUEUED, N.RUNNING]
                ).values("id")
            )
        ).update(
            outcome=EventWait.Outcome.RESUMED,
            payload=payload,
            source=source,
            event=event,
            resolved_at=now,
        )
    )


def execution_wait(*, execution: Execution, node: str | None) -> EventWait:
    """The wait of ``node`` of the execution (or its only waiting node when ``node`` is
    None). Raises NotWaiting when that node is not waiting."""
    waits = EventWait.objects.filter(execution=execution, outcome__isnull=True)
    if node is None:
        found = list(waits[:2])
        if len(found) != 1:
            names = ", ".join(w.node for w in found) or "none"
            raise NotWaiting(
                "name the node to resume" + (f" (waiting: {names})" if found else ": no node waits")
            )
        return found[0]
    wait = waits.filter(node=node).first()
    if wait is None:
        if not NodeRun.objects.filter(execution=execution, node=node).exists():
            raise NotWaiting(f"execution has no node {node!r}")
        decided = EventWait.objects.filter(execution=execution, node=node).first()
        if decided is not None and decided.outcome == EventWait.Outcome.RESUMED:
            raise NotWaiting(f"node {node!r} was already resumed ({decided.source})")
        if decided is not None and decided.outcome == EventWait.Outcome.TIMED_OUT:
            raise NotWaiting(f"node {node!r} timed out waiting")
        raise NotWaiting(f"node {node!r} is not waiting")
    return wait


def execution_resume(
    *, execution: Execution, node: str | None, data: Any, source: str, now=None
) -> EventWait:
    """Resume the waiting node ``node`` of ``execution`` with ``data``. Raises NotWaiting
    (409) when it is not waiting, PayloadInvalid (400) when ``data`` does not fit its schema."""
    now = now or timezone.now()
    if execution.status not in EXECUTION_ACTIVE:
        raise NotWaiting(f"execution is {execution.status}")
    wait = execution_wait(execution=execution, node=node)
    errors = payload_errors(wait.schema, data)
    if errors:
        raise PayloadInvalid(errors)
    if wait.until <= now:
        raise NotWaiting(f"node {wait.node!r} timed out waiting")
    if not wait_resume(wait=wait, payload=data, source=source, now=now):
        wait.refresh_from_db()
        execution.refresh_from_db(fields=["status"])
        if wait.outcome == EventWait.Outcome.RESUMED:
            raise NotWaiting(f"node {wait.node!r} was already resumed ({wait.source})")
        if wait.outcome == EventWait.Outcome.TIMED_OUT or wait.until <= now:
            raise NotWaiting(f"node {wait.node!r} timed out waiting")
        raise NotWaiting(f"node {wait.node!r} is not waiting (execution {execution.status})")
    wait.refresh_from_db()
    return wait
