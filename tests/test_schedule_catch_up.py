"""Schedules that catch up after Beat was down (none / latest / all within a window), never
overlap by accident (allow / skip / buffer_one), record every slot once, and backfill a range
through the API. The clock is moved by passing ``now``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from executions.engine.recovery import recovery_run
from executions.models import Execution, ScheduleSlot
from executions.services.executions import execution_create
from executions.triggers.schedules import run_scheduled, schedule_slots, schedule_tick
from tests.helpers import make_workflow, node, wait_all, wait_for
from tests.support.processes import ROOT
from tests.support.worker import database_url_for_workers

pytestmark = [pytest.mark.django_db(transaction=True)]


def at(hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2026, 1, 5, hour, minute, second, tzinfo=UTC)


def scheduled(user, cron="*/15 * * * *", nodes=None, **schedule):
    return make_workflow(
        user, nodes or [node("a")], schedule={"cron": cron, "timezone": "UTC", **schedule}
    )


def runs(wf) -> dict[datetime, Execution]:
    return {
        e.scheduled_for: e for e in Execution.objects.filter(workflow=wf).order_by("scheduled_for")
    }


def outcomes(wf) -> dict[datetime, str]:
    return dict(ScheduleSlot.objects.filter(workflow=wf).values_list("slot", "outcome"))


def down_for_three_slots(wf):
    """A run at 10:00, then Beat is down for 10:15, 10:30 and 10:45 and fires at 10:50."""
    schedule_tick(workflow_id=wf.id, now=at(10, 0, 2))
    return schedule_tick(workflow_id=wf.id, now=at(10, 50, 1))


@pytest.mark.worker
def test_catch_up_all_starts_one_run_per_missed_slot(worker, user):
    wf = scheduled(user, catch_up="all")
    decisions = down_for_three_slots(wf)
    missed = [at(10, 15), at(10, 30), at(10, 45)]
    assert [(d.slot, d.outcome) for d in decisions] == [(s, "started") for s in missed]
    by_slot = runs(wf)
    assert list(by_slot) == [at(10, 0), *missed]
    for slot, ex in by_slot.items():
        assert ex.input == {"scheduled_for": slot.isoformat()} and ex.trigger == "schedule"
    # Beat firing again (a duplicate, a second Beat) changes nothing.
    schedule_tick(workflow_id=wf.id, now=at(10, 50, 30))
    schedule_tick(workflow_id=wf.id, now=at(10, 45, 10))
    assert Execution.objects.filter(workflow=wf).count() == 4
    assert all(e.status == "succeeded" for e in wait_all([e.id for e in by_slot.values()]))
    # The next regular slot runs as usual.
    schedule_tick(workflow_id=wf.id, now=at(11, 0, 1))
    assert list(runs(wf))[-1] == at(11, 0)


def test_catch_up_latest_runs_only_the_most_recent_missed_slot(user):
    wf = scheduled(user, catch_up="latest")
    down_for_three_slots(wf)
    assert list(runs(wf)) == [at(10, 0), at(10, 45)]
    assert outcomes(wf) == {
        at(10, 0): "started",
        at(10, 15): "missed",
        at(10, 30): "missed",
        at(10, 45): "started",
    }


def test_catch_up_none_runs_only_the_next_slot(user):
    wf = scheduled(user, catch_up="none")
    down_for_three_slots(wf)
    assert list(runs(wf)) == [at(10, 0)]
    assert set(outcomes(wf).values()) == {"started", "missed"} and len(outcomes(wf)) == 4
    schedule_tick(workflow_id=wf.id, now=at(11, 0, 3))
    assert list(runs(wf)) == [at(10, 0), at(11, 0)]


def test_catch_up_window_bounds_how_far_back(user):
    wf = scheduled(user, catch_up="all", catch_up_window_seconds=25 * 60)
    down_for_three_slots(wf)  # 10:50 - 25 min = 10:25: 10:15 is outside the window
    assert list(runs(wf)) == [at(10, 0), at(10, 30), at(10, 45)]


def test_one_execution_per_slot_is_a_database_constraint(user):
    wf = scheduled(user)
    execution_create(workflow=wf, input={}, scheduled_for=at(10, 0))
    again, created = execution_create(workflow=wf, input={}, scheduled_for=at(10, 0))
    assert not created
    with pytest.raises(IntegrityError), transaction.atomic():
        Execution.objects.create(
            workflow=wf,
            snapshot=again.snapshot,
            workflow_version=1,
            scheduled_for=at(10, 0),
            deadline_at=at(11, 0),
        )
    with pytest.raises(IntegrityError), transaction.atomic():
        ScheduleSlot.objects.create(workflow=wf, slot=at(9, 0), outcome="started")
        ScheduleSlot.objects.create(workflow=wf, slot=at(9, 0), outcome="skipped")


@pytest.mark.worker
def test_overlap_skip_records_the_skipped_slot(worker, user):
    wf = scheduled(user, cron="* * * * *", nodes=[node("slow", "test_behave", config={"sleep": 3})])
    wf.schedule["overlap"] = "skip"
    wf.save(update_fields=["schedule"])
    base = timezone.now().replace(second=0, microsecond=0)
    first = schedule_tick(workflow_id=wf.id, now=base + timedelta(seconds=1))[0]
    assert first.outcome == "started"
    wait_for(first.execution.id, statuses={"running"})
    second = schedule_tick(workflow_id=wf.id, now=base + timedelta(minutes=1, seconds=1))
    assert [d.outcome for d in second] == ["skipped"]
    slot = ScheduleSlot.objects.get(workflow=wf, slot=base + timedelta(minutes=1))
    assert slot.outcome == "skipped" and "still active" in slot.reason
    assert wait_for(first.execution.id).status == "succeeded"
    third = schedule_tick(workflow_id=wf.id, now=base + timedelta(minutes=2, seconds=1))
    assert [d.outcome for d in third] == ["started"]


@pytest.mark.worker
def test_overlap_buffer_one_keeps_one_slot_and_starts_it_after(worker, user):
    wf = scheduled(user, cron="* * * * *", nodes=[node("slow", "test_behave", config={"sleep": 2})])
    wf.schedule["overlap"] = "buffer_one"
    wf.save(update_fields=["schedule"])
    base = timezone.now().replace(second=0, microsecond=0)
    first = schedule_tick(workflow_id=wf.id, now=base + timedelta(seconds=1))[0]
    wait_for(first.execution.id, statuses={"running"})
    second = schedule_tick(workflow_id=wf.id, now=base + timedelta(minutes=1, seconds=1))[0]
    third = schedule_tick(workflow_id=wf.id, now=base + timedelta(minutes=2, seconds=1))[0]
    assert (second.outcome, third.outcome) == ("buffered", "skipped")
    buffered = Execution.objects.get(id=second.execution.id)
    assert buffered.deferred and not buffered.node_runs.exists()
    assert recovery_run().deferred_started == 0  # the first is still running
    assert wait_for(first.execution.id).status == "succeeded"
    assert recovery_run().deferred_started == 1
    done = wait_for(buffered.id)
    assert done.status == "succeeded" and done.scheduled_for == base + timedelta(minutes=1)
    assert done.node_runs.get().started_at >= first.execution.node_runs.get().finished_at


def test_the_task_runs_the_slot_with_scheduled_for(user):
    wf = scheduled(user, cron="* * * * *")
    ex = Execution.objects.get(id=run_scheduled(str(wf.id)))
    assert ex.scheduled_for is not None
    assert ex.input == {"scheduled_for": ex.scheduled_for.isoformat()}


def test_schedule_slots_jump_over_days_and_keep_the_local_time():
    nine = {"cron": "0 9 * * 1", "timezone": "Europe/Berlin"}  # Mondays 09:00 Berlin
    slots = list(schedule_slots(nine, at(0, 0), at(0, 0) + timedelta(days=200)))
    assert slots[0] == at(8, 0)  # 2026-01-05 is a Monday, CET
    assert all(s.astimezone(UTC).weekday() == 0 for s in slots) and len(slots) == 29
    assert datetime(2026, 7, 6, 7, 0, tzinfo=UTC) in slots  # CEST


# --- backfill ----------------------------------------------------------------------------------


def backfill(api, wf, start, end):
    return api.post(
        f"/api/workflows/{wf.id}/backfill/", {"start": start, "end": end}, format="json"
    )


@pytest.mark.worker
def test_backfill_starts_one_run_per_slot_and_is_idempotent(worker, api, user):
    wf = scheduled(user)
    res = backfill(api, wf, "2026-01-05T10:00:00Z", "2026-01-05T11:00:00Z")
    assert res.status_code == 202, res.json()
    body = res.json()
    assert body["count"] == 4 and len(set(body["ids"])) == 4
    assert [r["scheduled_for"] for r in body["executions"]] == [
        "2026-01-05T10:00:00Z",
        "2026-01-05T10:15:00Z",
        "2026-01-05T10:30:00Z",
        "2026-01-05T10:45:00Z",
    ]
    executions = wait_all(body["ids"])
    assert {e.trigger for e in executions} == {"backfill"}
    assert all(e.input == {"scheduled_for": e.scheduled_for.isoformat()} for e in executions)
    again = backfill(api, wf, "2026-01-05T10:30:00+00:00", "2026-01-05T11:30:00+00:00")
    assert again.status_code == 202
    assert again.json()["ids"][:2] == body["ids"][2:]  # the same runs for the same slots
    assert [r["created"] for r in again.json()["executions"]] == [False, False, True, True]
    # The schedule firing for a backfilled slot finds its run.
    decided = schedule_tick(workflow_id=wf.id, now=at(11, 15, 2))
    assert decided[0].execution.id == runs(wf)[at(11, 15)].id
    assert Execution.objects.filter(workflow=wf).count() == 6


def test_backfill_runs_a_slot_that_was_skipped(api, user):
    wf = scheduled(user, catch_up="none")
    down_for_three_slots(wf)
    assert outcomes(wf)[at(10, 15)] == "missed"
    res = backfill(api, wf, "2026-01-05T10:15:00Z", "2026-01-05T10:16:00Z")
    assert res.status_code == 202 and res.json()["count"] == 1
    assert outcomes(wf)[at(10, 15)] == "started"
    assert runs(wf)[at(10, 15)].trigger == "backfill"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"start": "2026-01-05T10:00:00Z", "end": "2026-01-05T10:00:00Z"}, "end"),
        ({"start": "yesterday", "end": "2026-01-05T10:00:00Z"}, "start"),
        ({"start": "2026-01-05T10:00:00Z"}, "end"),
        ({"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:01Z"}, "end"),  # 1441 slots
    ],
)
def test_bad_backfill_is_400_naming_the_field(api, user, body, field):
    wf = scheduled(user, cron="* * * * *")
    res = api.post(f"/api/workflows/{wf.id}/backfill/", body, format="json")
    assert res.status_code == 400 and field in res.json(), res.json()
    assert not Execution.objects.exists()


def test_backfill_of_an_unscheduled_workflow_is_409(api, user):
    wf = make_workflow(user, [node("a")])
    assert backfill(api, wf, "2026-01-05T10:00:00Z", "2026-01-05T11:00:00Z").status_code == 409


def test_thousand_slots_is_the_limit(api, user):
    from tests.support.broker import PrivateBroker

    wf = scheduled(user, cron="* * * * *")
    with PrivateBroker():  # nothing needs to run here
        started = time.monotonic()
        res = backfill(api, wf, "2026-01-05T00:00:00Z", "2026-01-05T16:40:00Z")
    assert res.status_code == 202 and res.json()["count"] == 1000
    assert time.monotonic() - started < 240


@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        ({"overlap": "sometimes"}, "overlap"),
        ({"catch_up": "everything"}, "catch_up"),
        ({"catch_up_window_seconds": 0}, "catch_up_window_seconds"),
    ],
)
def test_bad_schedule_settings_are_400(api, schedule, field):
    from tests.helpers import workflow_doc

    doc = workflow_doc([node("a")], schedule={"cron": "* * * * *", **schedule})
    res = api.post("/api/workflows/", doc, format="json")
    assert res.status_code == 400 and field in res.json()["schedule"], res.json()


# --- the real Beat --------------------------------------------------------------------------


@pytest.mark.worker
def test_real_beat_fires_a_run_with_its_slot(worker, user, tmp_path):
    wf = scheduled(user, cron="* * * * *", overlap="skip", catch_up="all")
    beat = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "weconnect",
            "beat",
            "-l",
            "warning",
            "--scheduler",
            "django_celery_beat.schedulers:DatabaseScheduler",
            "--pidfile",
            str(tmp_path / "beat.pid"),
        ],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url_for_workers()},
        stdout=open(tmp_path / "beat.log", "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 150  # the next minute, on a loaded machine
        while not Execution.objects.filter(workflow=wf).exists():
            assert beat.poll() is None, (tmp_path / "beat.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "beat.log").read_text()
            time.sleep(0.5)
    finally:
        os.killpg(beat.pid, signal.SIGTERM)
        beat.wait(timeout=30)
    ex = wait_for(Execution.objects.filter(workflow=wf).first().id)
    assert ex.status == "succeeded" and ex.trigger == "schedule"
    assert ex.scheduled_for.second == 0 and ex.scheduled_for <= ex.created_at
    assert ex.input == {"scheduled_for": ex.scheduled_for.isoformat()}
    assert ScheduleSlot.objects.get(workflow=wf, slot=ex.scheduled_for).outcome == "started"
