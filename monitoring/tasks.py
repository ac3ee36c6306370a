"""Beat-driven upkeep tasks (schedules created by monitoring/migrations/0001_stale_sweep.py)."""

from __future__ import annotations

from celery import shared_task

from monitoring.sweeps import retention_sweep, stale_sweep


@shared_task(name="weconnect.stale_sweep", ignore_result=True, acks_late=True)
def stale_sweep_task() -> int:
    return len(stale_sweep().cancelled)


@shared_task(name="weconnect.retention", ignore_result=True, acks_late=True)
def retention_task() -> int:
    return retention_sweep()
