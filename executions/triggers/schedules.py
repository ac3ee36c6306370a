"""Cron schedules: a workflow's ``schedule`` kept as a django-celery-beat PeriodicTask.

A workflow carries ``{"cron": "*/15 * * * *", "timezone": "Europe/Berlin"}`` or null. Saving it
writes one PeriodicTask named ``workflow:<id>`` (a timezone-aware CrontabSchedule, task
``weconnect.run_scheduled`` with the workflow id as argument, disabled while the workflow is
inactive), so Beat (one scheduler, never each web process) fires it and the admin shows it.

Beat can fire the same slot twice (two Beat processes during a deploy, a restart that replays
a due entry). Each fire is therefore mapped to its cron slot, the latest matching minute at or
before the fire, and the slot is the execution's idempotency key: a second fire for the same
slot returns the execution the first one created.
"""

from __future__ import annotations

import json
import logging
import zoneinfo
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import shared_task
from celery.schedules import ParseException, crontab
from django.utils import timezone

from executions.errors import Conflict
from executions.models import Workflow
from executions.services.executions import execution_create
from executions.states import Trigger

log = logging.getLogger("weconnect.triggers")

TASK_NAME = "weconnect.run_scheduled"
CRON_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# How far back a fire looks for its slot; a fire delayed longer than this (Beat down for a
# day) is keyed by its own minute instead.
SLOT_LOOKBACK_MINUTES = 2 * 24 * 60
# A fire that lands a moment before its minute (clocks of Beat and worker differ) still
# belongs to that minute.
CLOCK_SKEW = timedelta(seconds=5)


def cron_fields(cron: str) -> dict[str, str]:
    """The five cron fields of ``cron`` (or an @alias), checked. Raises ValueError."""
    if not isinstance(cron, str) or not cron.strip():
        raise ValueError("must be a cron expression such as '*/15 * * * *'")
    text = ALIASES.get(cron.strip().lower(), cron.strip())
    parts = text.split()
    if len(parts) != 5:
        raise ValueError(
            f"must have 5 fields (minute hour day-of-month month day-of-week), not {len(parts)}"
        )
    fields = dict(zip(CRON_FIELDS, parts, strict=True))
    try:
        _crontab(fields)
    except (ValueError, ParseException) as exc:
        raise ValueError(f"{cron!r} is not a valid cron expression: {exc}") from None
    return fields


def check_timezone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(
            f"{name!r} is not a known time zone (use an IANA name such as 'Europe/Berlin')"
        ) from None
    return name


def _crontab(fields: Mapping[str, str]) -> crontab:
    return crontab(**fields)


def _matches(spec: crontab, local: datetime) -> bool:
    # Celery's crontab: day_of_week 0 is Sunday, and day-of-month and day-of-week must both match.
    return (
        local.minute in spec.minute
        and local.hour in spec.hour
        and local.day in spec.day_of_month
        and local.month in spec.month_of_year
        and local.isoweekday() % 7 in spec.day_of_week
    )


def schedule_slot(schedule: Mapping[str, Any], now: datetime) -> datetime:
    """The cron slot a fire at ``now`` belongs to (UTC, whole minute)."""
    spec = _crontab(cron_fields(schedule["cron"]))
    tz = zoneinfo.ZoneInfo(schedule.get("timezone") or "UTC")
    start = (now + CLOCK_SKEW).astimezone(UTC).replace(second=0, microsecond=0)
    for back in range(SLOT_LOOKBACK_MINUTES + 1):
        candidate = start - timedelta(minutes=back)
        if _matches(spec, candidate.astimezone(tz)):
            return candidate
    return now.astimezone(UTC).replace(second=0, microsecond=0)


def _task_name(workflow_id) -> str:
    return f"workflow:{workflow_id}"


def schedule_sync(*, workflow) -> None:
    """Create, update, disable or remove the workflow's PeriodicTask to match its schedule.
    Runs inside the transaction that saved the workflow."""
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    if not workflow.schedule:
        schedule_remove(workflow_id=workflow.pk)
        return
    fields = cron_fields(workflow.schedule["cron"])
    tz = check_timezone(workflow.schedule.get("timezone") or "UTC")
    crontab_row = CrontabSchedule.objects.filter(**fields, timezone=tz).order_by("id").first()
    if crontab_row is None:
        crontab_row = CrontabSchedule.objects.create(**fields, timezone=tz)
    task = PeriodicTask.objects.filter(name=_task_name(workflow.pk)).first() or PeriodicTask(
        name=_task_name(workflow.pk)
    )
    task.task = TASK_NAME
    task.crontab = crontab_row
    task.interval = task.solar = task.clocked = None
    task.args = json.dumps([str(workflow.pk)])
    task.kwargs = "{}"
    task.enabled = bool(workflow.is_active)
    task.description = f"Schedule of workflow {workflow.name!r}"[:1000]
    # save() (not update()) so django-celery-beat records the change and Beat reloads.
    task.save()


def schedule_remove(*, workflow_id) -> None:
    from django_celery_beat.models import PeriodicTask

    for task in PeriodicTask.objects.filter(name=_task_name(workflow_id)):
        task.delete()


def schedule_fire(*, workflow_id: str, now: datetime | None = None):
    """Start the scheduled execution for the slot of ``now``; returns (execution, created),
    or None when the workflow is gone, inactive or no longer scheduled."""
    now = now or timezone.now()
    workflow = Workflow.objects.filter(id=workflow_id).first()
    if workflow is None:
        # A PeriodicTask left behind by a workflow deleted some other way: drop it.
        schedule_remove(workflow_id=workflow_id)
        log.warning("scheduled workflow no longer exists", extra={"workflow_id": str(workflow_id)})
        return None
    if not workflow.schedule:
        log.info("scheduled fire ignored", extra={"workflow_id": str(workflow_id)})
        return None
    slot = schedule_slot(workflow.schedule, now)
    try:
        return execution_create(
            workflow=workflow,
            input={"scheduled_for": slot.isoformat()},
            trigger=Trigger.SCHEDULE,
            idempotency_key=f"schedule:{slot.isoformat()}",
        )
    except Conflict:  # the workflow is inactive (its PeriodicTask is disabled by then)
        log.info("scheduled fire ignored", extra={"workflow_id": str(workflow_id)})
        return None


@shared_task(name=TASK_NAME, ignore_result=True, acks_late=True)
def run_scheduled(workflow_id: str) -> str | None:
    result = schedule_fire(workflow_id=workflow_id)
    if result is None:
        return None
    execution, created = result
    if not created:
        log.info(
            "duplicate fire for a slot already run",
            extra={"workflow_id": str(workflow_id), "execution_id": str(execution.id)},
        )
    return str(execution.id)
