"""Cron schedules: a workflow's ``schedule`` kept as a django-celery-beat PeriodicTask.

A workflow carries ``{"cron": "*/15 * * * *", "timezone": "Europe/Berlin"}`` or null. Saving it
writes one PeriodicTask named ``workflow:<id> (<workflow name>)`` (a timezone-aware CrontabSchedule, task
``weconnect.run_scheduled`` with the workflow id as argument, disabled while the workflow is
inactive), so Beat (one scheduler, never each web process) fires it and the admin shows it.

Beat can fire the same slot twice (two Beat processes during a deploy, a restart that replays
a due entry). Each fire is therefore mapped to its cron slot, the latest matching minute at or
before the fire, and every slot is decided once: the ``ScheduleSlot`` ledger and the
execution's ``scheduled_for`` are each unique per (workflow, slot), and fires of a workflow
are serialized by its row lock.

A fire also decides the slots since the last one it recorded (Beat was down):

- ``catch_up``: ``none`` runs only the current slot, and only when the fire is on time (within
  ON_TIME of it); ``latest`` also runs the most recent missed slot; ``all`` runs every missed
  slot within ``catch_up_window_seconds``. Slots not run are recorded ``missed``.
- ``overlap``: ``allow`` starts every slot; ``skip`` records a slot ``skipped`` while a
  scheduled run of the workflow is still active; ``buffer_one`` keeps one such slot as a
  deferred execution that starts when the active run has finished (the recovery pass or the
  next fire starts it), and skips slots beyond that one.
"""

from __future__ import annotations

import json
import logging
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import shared_task
from celery.schedules import ParseException, crontab
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from executions.models import Execution, ScheduleSlot, Workflow
from executions.services.executions import (
    Conflict,
    execution_create,
    execution_start_deferred,
    schedule_run_active,
)
from executions.states import ExecutionStatus, SlotOutcome, Trigger

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

OVERLAP_MODES = ("allow", "skip", "buffer_one")
CATCH_UP_MODES = ("none", "latest", "all")
MAX_CATCH_UP_WINDOW_SECONDS = 30 * 24 * 3600
SCHEDULE_DEFAULTS = {
    "timezone": "UTC",
    "overlap": "allow",
    "catch_up": "latest",
    "catch_up_window_seconds": 24 * 3600,
}
# A fire this close after its slot is the regular run of that slot, not a catch-up.
ON_TIME = timedelta(seconds=60)
# Most slots one fire catches up or one backfill starts.
MAX_SLOTS = 1000


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


def schedule_slots(schedule: Mapping[str, Any], start: datetime, end: datetime):
    """The cron slots ``start <= slot < end`` (UTC, ascending). Days and hours that cannot
    match are jumped over, so a sparse cron over a long range stays cheap."""
    spec = _crontab(cron_fields(schedule["cron"]))
    tz = zoneinfo.ZoneInfo(schedule.get("timezone") or "UTC")
    t = start.astimezone(UTC)
    if t.second or t.microsecond:
        t = t.replace(second=0, microsecond=0) + timedelta(minutes=1)
    end = end.astimezone(UTC)
    while t < end:
        local = t.astimezone(tz)
        if (
            local.month not in spec.month_of_year
            or local.day not in spec.day_of_month
            or local.isoweekday() % 7 not in spec.day_of_week
        ):
            midnight = datetime(local.year, local.month, local.day, tzinfo=tz) + timedelta(days=1)
            t = max(midnight.astimezone(UTC), t + timedelta(minutes=1))
            continue
        if local.hour not in spec.hour:
            t += timedelta(minutes=60 - local.minute)
            continue
        if local.minute in spec.minute:
            yield t
        t += timedelta(minutes=1)


def schedule_settings(schedule: Mapping[str, Any]) -> dict[str, Any]:
    """The schedule with the defaults of the fields it does not set."""
    return {**SCHEDULE_DEFAULTS, **{k: v for k, v in schedule.items() if v is not None}}


def _task_prefix(workflow_id) -> str:
    return f"workflow:{workflow_id}"


def schedule_task_name(workflow) -> str:
    """``workflow:<id> (<name>)``: found by its id prefix, read by its workflow's name in the
    admin's list of periodic tasks (the name is unique and at most 200 characters)."""
    return f"{_task_prefix(workflow.pk)} ({workflow.name})"[:200]


def _tasks_of(workflow_id):
    from django_celery_beat.models import PeriodicTask

    # The id prefix is followed by the end of the name or by " (" and the workflow's name.
    prefix = _task_prefix(workflow_id)
    return PeriodicTask.objects.filter(Q(name=prefix) | Q(name__startswith=prefix + " ("))


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
    task = _tasks_of(workflow.pk).first() or PeriodicTask()
    task.name = schedule_task_name(workflow)
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
    for task in _tasks_of(workflow_id):
        task.delete()


@dataclass
class SlotDecision:
    slot: datetime
    outcome: str
    execution: Execution | None = None
    created: bool = False


def schedule_tick(*, workflow_id: str, now: datetime | None = None) -> list[SlotDecision] | None:
    """Decide the slots due at ``now`` for the workflow's schedule (see the module's
    docstring): the current one and those missed since the last recorded slot. Returns the
    decisions in slot order, or None when the workflow is gone, inactive or unscheduled."""
    now = now or timezone.now()
    workflow = Workflow.objects.filter(id=workflow_id).first()
    if workflow is None:
        # A PeriodicTask left behind by a workflow deleted some other way: drop it.
        schedule_remove(workflow_id=workflow_id)
        log.warning("scheduled workflow no longer exists", extra={"workflow_id": str(workflow_id)})
        return None
    if not workflow.is_active or not workflow.schedule:
        log.info("scheduled fire ignored", extra={"workflow_id": str(workflow_id)})
        return None
    schedule = schedule_settings(workflow.schedule)
    current = schedule_slot(schedule, now)
    with transaction.atomic():
        # Fires of one workflow (a duplicate from a second Beat, a backfill, a buffered
        # start) are decided one at a time: the overlap check and the slot ledger agree.
        Workflow.objects.select_for_update().filter(id=workflow.id).first()
        done = ScheduleSlot.objects.filter(workflow=workflow, slot=current).first()
        if done is not None:
            return [SlotDecision(current, done.outcome, done.execution, False)]
        last = ScheduleSlot.objects.filter(workflow=workflow, trigger=Trigger.SCHEDULE).aggregate(
            last=Max("slot")
        )["last"]
        on_time = now - current <= ON_TIME
        window_start = now - timedelta(seconds=int(schedule["catch_up_window_seconds"]))
        missed: list[datetime] = []
        if last is not None and last < current:
            start = max(last + timedelta(minutes=1), window_start)
            missed = [s for s in schedule_slots(schedule, start, current) if s > last]
        if not on_time and current >= window_start:
            missed.append(current)
        # Slots a backfill has already decided keep their run.
        taken = set(
            ScheduleSlot.objects.filter(workflow=workflow, slot__in=missed).values_list(
                "slot", flat=True
            )
        )
        missed = [s for s in missed if s not in taken][-MAX_SLOTS:]
        regular = [current] if on_time else []
        if schedule["catch_up"] == "all":
            run = missed + regular
        elif schedule["catch_up"] == "latest":
            run = missed[-1:] + regular
        else:
            run = regular
        decisions = [SlotDecision(slot, SlotOutcome.MISSED) for slot in missed if slot not in run]
        for slot in run:
            decisions.append(_decide(workflow, schedule["overlap"], slot))
        for d in decisions:
            if d.outcome == SlotOutcome.MISSED:
                _record(workflow, d.slot, SlotOutcome.MISSED, None, "Beat did not fire in time")
    decisions.sort(key=lambda d: d.slot)
    log.info(
        "schedule fired",
        extra={
            "workflow_id": str(workflow.id),
            "slots": {d.slot.isoformat(): d.outcome for d in decisions},
        },
    )
    return decisions


def _record(workflow, slot, outcome, execution, reason: str = "", trigger=Trigger.SCHEDULE):
    ScheduleSlot.objects.create(
        workflow=workflow,
        slot=slot,
        outcome=outcome,
        execution=execution,
        reason=reason[:255],
        trigger=trigger,
    )


def _start_slot(workflow, slot, trigger=Trigger.SCHEDULE, deferred=False):
    return execution_create(
        workflow=workflow,
        input={"scheduled_for": slot.isoformat()},
        trigger=trigger,
        idempotency_key=f"schedule:{slot.isoformat()}",
        scheduled_for=slot,
        deferred=deferred,
    )


def _decide(workflow, overlap: str, slot: datetime) -> SlotDecision:
    """Start, buffer or skip ``slot`` by the overlap policy. Under the workflow's row lock."""
    if overlap != "allow":
        buffered = (
            Execution.objects.filter(
                workflow=workflow,
                trigger=Trigger.SCHEDULE,
                deferred=True,
                status=ExecutionStatus.PENDING,
            )
            .order_by("scheduled_for")
            .first()
        )
        active = schedule_run_active(workflow_id=workflow.id)
        if buffered is not None and not active:
            # Its predecessor has finished since: it goes first.
            execution_start_deferred(execution_id=buffered.id)
            active, buffered = True, None
        if active:
            if overlap == "buffer_one" and buffered is None:
                execution, created = _start_slot(workflow, slot, deferred=True)
                _record(workflow, slot, SlotOutcome.BUFFERED, execution)
                return SlotDecision(slot, SlotOutcome.BUFFERED, execution, created)
            reason = "the previous scheduled run is still active"
            _record(workflow, slot, SlotOutcome.SKIPPED, None, reason)
            return SlotDecision(slot, SlotOutcome.SKIPPED)
    execution, created = _start_slot(workflow, slot)
    _record(workflow, slot, SlotOutcome.STARTED, execution)
    return SlotDecision(slot, SlotOutcome.STARTED, execution, created)


def schedule_fire(*, workflow_id: str, now: datetime | None = None):
    """Fire the schedule at ``now``; returns (execution, created) of the latest slot that has
    an execution, or None (workflow gone, inactive or unscheduled; nothing started)."""
    decisions = schedule_tick(workflow_id=workflow_id, now=now)
    for d in reversed(decisions or []):
        if d.execution is not None:
            return d.execution, d.created
    return None


class BackfillTooLarge(ValueError):
    """More slots than MAX_SLOTS in the range (answered as 400)."""


def schedule_backfill(*, workflow: Workflow, start: datetime, end: datetime) -> list[SlotDecision]:
    """Start one run (trigger ``backfill``) per cron slot with ``start <= slot < end``; a slot
    that already has a run keeps it (idempotent per slot), one recorded skipped or missed is
    run now. Overlap rules do not apply: the caller asked for these runs."""
    if not workflow.is_active:
        raise Conflict("workflow is inactive")
    if not workflow.schedule:
        raise Conflict("the workflow has no schedule")
    schedule = schedule_settings(workflow.schedule)
    slots = []
    for slot in schedule_slots(schedule, start, end):
        slots.append(slot)
        if len(slots) > MAX_SLOTS:
            raise BackfillTooLarge(f"the range holds more than {MAX_SLOTS} slots")
    decisions = []
    with transaction.atomic():
        Workflow.objects.select_for_update().filter(id=workflow.id).first()
        ledger = {
            row.slot: row for row in ScheduleSlot.objects.filter(workflow=workflow, slot__in=slots)
        }
        for slot in slots:
            row = ledger.get(slot)
            if row is not None and row.execution_id is not None:
                decisions.append(SlotDecision(slot, row.outcome, row.execution, False))
                continue
            execution, created = _start_slot(workflow, slot, trigger=Trigger.BACKFILL)
            if row is None:
                _record(workflow, slot, SlotOutcome.STARTED, execution, trigger=Trigger.BACKFILL)
            else:
                ScheduleSlot.objects.filter(id=row.id).update(
                    outcome=SlotOutcome.STARTED, execution=execution, reason="backfilled"
                )
            decisions.append(SlotDecision(slot, SlotOutcome.STARTED, execution, created))
    return decisions


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
