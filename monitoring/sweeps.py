"""Periodic upkeep: the stale sweep (every six hours) and retention (daily).

Both work in bounded batches, change each row with a conditional update, take the clock as
a parameter so tests can move time, and log the ids they touched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from executions.models import Execution
from executions.services.executions import execution_terminate
from executions.states import EXECUTION_ACTIVE, EXECUTION_TERMINAL, ExecutionStatus

log = logging.getLogger("weconnect.sweeps")


@dataclass
class SweepReport:
    cancelled: list[str] = field(default_factory=list)
    batches: int = 0


def stale_sweep(
    *, now=None, stale_after: int | None = None, batch: int | None = None, max_batches: int = 20
) -> SweepReport:
    """Cancel executions ``pending`` or ``running`` for longer than WECONNECT_STALE_AFTER
    seconds (measured from when they started, or were created if they never started), with
    the reason recorded and cleanup as for a cancel."""
    now = now or timezone.now()
    stale_after = stale_after or settings.WECONNECT_STALE_AFTER
    batch = batch or settings.WECONNECT_SWEEP_BATCH
    cutoff = now - timedelta(seconds=stale_after)
    report = SweepReport()
    reason = {
        "message": f"stale: still active after {stale_after} seconds; cancelled by the stale sweep",
        "type": "Stale",
        "swept_at": now.isoformat(),
    }
    seen: set = set()
    for _ in range(max_batches):
        ids = list(
            Execution.objects.filter(status__in=EXECUTION_ACTIVE)
            .annotate(since=Coalesce(F("started_at"), F("created_at")))
            .filter(since__lt=cutoff)
            .exclude(id__in=seen)
            .order_by("since")
            .values_list("id", flat=True)[:batch]
        )
        if not ids:
            break
        report.batches += 1
        seen.update(ids)
        done = [
            str(i)
            for i in ids
            if execution_terminate(
                execution_id=i, status=ExecutionStatus.CANCELLED, error=reason, now=now
            )
        ]
        report.cancelled.extend(done)
        log.info("stale sweep batch", extra={"cancelled": len(done), "execution_ids": done})
        if len(ids) < batch:
            break
    return report


def retention_sweep(
    *, now=None, days: int | None = None, batch: int | None = None, max_batches: int = 100
) -> int:
    """Delete finished executions (with their node runs) older than WECONNECT_RETENTION_DAYS."""
    now = now or timezone.now()
    days = days or settings.WECONNECT_RETENTION_DAYS
    batch = batch or settings.WECONNECT_SWEEP_BATCH
    cutoff = now - timedelta(days=days)
    deleted = 0
    for _ in range(max_batches):
        ids = list(
            Execution.objects.filter(status__in=EXECUTION_TERMINAL, finished_at__lt=cutoff)
            .order_by("finished_at")
            .values_list("id", flat=True)[:batch]
        )
        if not ids:
            break
        # Conditional: only rows still finished and old (a retried execution is a new row).
        count, _ = Execution.objects.filter(
            id__in=ids, status__in=EXECUTION_TERMINAL, finished_at__lt=cutoff
        ).delete()
        deleted += len(ids)
        log.info(
            "retention batch", extra={"deleted_rows": count, "execution_ids": [str(i) for i in ids]}
        )
        if len(ids) < batch:
            break
    return deleted
