"""Cron schedules: the PeriodicTask kept in step with the workflow, validation, and the
scheduled run with its slot-derived idempotency key."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from django_celery_beat.models import PeriodicTask

from executions.models import Execution
from executions.triggers.schedules import TASK_NAME, run_scheduled, schedule_fire, schedule_slot
from tests.support.workflows import node, workflow_doc

pytestmark = [pytest.mark.django_db(transaction=True)]

EVERY_15 = {"cron": "*/15 * * * *", "timezone": "Europe/Berlin"}


def create(api, **extra):
    res = api.post("/api/workflows/", workflow_doc([node("a")], **extra), format="json")
    assert res.status_code == 201, res.json()
    return res.json()


def put(api, wf_id, **extra):
    res = api.put(f"/api/workflows/{wf_id}/", workflow_doc([node("a")], **extra), format="json")
    assert res.status_code == 200, res.json()
    return res.json()


def periodic(wf_id) -> PeriodicTask | None:
    return PeriodicTask.objects.filter(name=f"workflow:{wf_id}").select_related("crontab").first()


def test_periodic_task_created_updated_disabled_removed(api):
    doc = create(api, schedule=EVERY_15)
    assert doc["schedule"] == EVERY_15
    task = periodic(doc["id"])
    assert task.task == TASK_NAME and json.loads(task.args) == [doc["id"]] and task.enabled
    cron = task.crontab
    assert (cron.minute, cron.hour, cron.day_of_month, cron.month_of_year, cron.day_of_week) == (
        "*/15",
        "*",
        "*",
        "*",
        "*",
    )
    assert str(cron.timezone) == "Europe/Berlin"

    put(api, doc["id"], schedule={"cron": "30 8 * * 1-5", "timezone": "America/New_York"})
    task = periodic(doc["id"])
    assert (task.crontab.minute, task.crontab.hour, task.crontab.day_of_week) == ("30", "8", "1-5")
    assert str(task.crontab.timezone) == "America/New_York"
    assert PeriodicTask.objects.filter(name__startswith="workflow:").count() == 1

    put(
        api,
        doc["id"],
        schedule={"cron": "30 8 * * 1-5", "timezone": "America/New_York"},
        is_active=False,
    )
    assert periodic(doc["id"]).enabled is False
    put(api, doc["id"], schedule={"cron": "@hourly"}, is_active=True)
    task = periodic(doc["id"])
    assert task.enabled and (task.crontab.minute, task.crontab.hour) == ("0", "*")
    assert str(task.crontab.timezone) == "UTC"

    put(api, doc["id"], schedule=None)
    assert periodic(doc["id"]) is None

    put(api, doc["id"], schedule=EVERY_15)
    assert periodic(doc["id"]) is not None
    assert api.delete(f"/api/workflows/{doc['id']}/").status_code == 204
    assert periodic(doc["id"]) is None


@pytest.mark.parametrize(
    ("schedule", "field", "reason"),
    [
        ({"cron": "61 * * * *"}, "cron", "not a valid cron expression"),
        ({"cron": "* * *"}, "cron", "must have 5 fields"),
        ({"cron": "*/15 * * * * *"}, "cron", "must have 5 fields"),
        ({"cron": "0 0 32 * *"}, "cron", "not a valid cron expression"),
        ({"cron": ""}, "cron", "may not be blank"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "timezone", "not a known time zone"),
        ({"cron": "* * * * *", "timezone": ""}, "timezone", "may not be blank"),
        ({"timezone": "UTC"}, "cron", "required"),
    ],
)
def test_invalid_schedule_is_400_naming_the_field(api, schedule, field, reason):
    res = api.post("/api/workflows/", workflow_doc([node("a")], schedule=schedule), format="json")
    assert res.status_code == 400
    errors = res.json()["schedule"][field]
    assert any(reason in e for e in errors), errors
    assert not PeriodicTask.objects.filter(name__startswith="workflow:").exists()


def test_schedule_slot_is_the_latest_matching_minute():
    # 10:07:30 UTC is 11:07:30 in Berlin (CET): the */15 slot is 10:00 UTC.
    now = datetime(2026, 1, 5, 10, 7, 30, tzinfo=UTC)
    assert schedule_slot(EVERY_15, now) == datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    # A fire a moment before its minute (clock skew) belongs to that minute.
    assert schedule_slot(EVERY_15, datetime(2026, 1, 5, 10, 14, 58, tzinfo=UTC)) == datetime(
        2026, 1, 5, 10, 15, tzinfo=UTC
    )
    # "0 9 * * *" in Berlin is 08:00 UTC in winter and 07:00 UTC in summer.
    nine = {"cron": "0 9 * * *", "timezone": "Europe/Berlin"}
    assert schedule_slot(nine, datetime(2026, 1, 5, 8, 0, 20, tzinfo=UTC)) == datetime(
        2026, 1, 5, 8, 0, tzinfo=UTC
    )
    assert schedule_slot(nine, datetime(2026, 7, 6, 7, 0, 20, tzinfo=UTC)) == datetime(
        2026, 7, 6, 7, 0, tzinfo=UTC
    )
    # Sunday is day 0 (Celery's crontab).
    sunday = {"cron": "0 12 * * 0", "timezone": "UTC"}
    assert schedule_slot(sunday, datetime(2026, 1, 6, 9, 0, tzinfo=UTC)) == datetime(
        2026, 1, 4, 12, 0, tzinfo=UTC
    )


def test_task_runs_the_workflow_with_trigger_schedule(api):
    doc = create(api, schedule={"cron": "* * * * *", "timezone": "UTC"})
    execution_id = run_scheduled(doc["id"])  # the task body, as the worker calls it
    ex = Execution.objects.get(id=execution_id)
    assert ex.trigger == "schedule" and str(ex.workflow_id) == doc["id"]
    assert ex.idempotency_key.startswith("schedule:")
    assert ex.input == {"scheduled_for": ex.idempotency_key.removeprefix("schedule:")}


def test_duplicate_fire_for_the_same_slot_makes_one_execution(api):
    doc = create(api, schedule=EVERY_15)
    first, created = schedule_fire(
        workflow_id=doc["id"], now=datetime(2026, 1, 5, 10, 0, 1, tzinfo=UTC)
    )
    again, created_again = schedule_fire(
        workflow_id=doc["id"], now=datetime(2026, 1, 5, 10, 0, 40, tzinfo=UTC)
    )
    assert created and not created_again and first.id == again.id
    assert first.input == {"scheduled_for": "2026-01-05T10:00:00+00:00"}
    later, created_later = schedule_fire(
        workflow_id=doc["id"], now=datetime(2026, 1, 5, 10, 15, 2, tzinfo=UTC)
    )
    assert created_later and later.id != first.id
    assert Execution.objects.filter(workflow_id=doc["id"]).count() == 2


def test_fire_for_inactive_unscheduled_or_deleted_workflow_does_nothing(api):
    doc = create(api, schedule=EVERY_15, is_active=False)
    assert run_scheduled(doc["id"]) is None
    put(api, doc["id"], schedule=None)
    assert run_scheduled(doc["id"]) is None
    assert not Execution.objects.exists()
    # A PeriodicTask whose workflow is gone removes itself when it fires.
    gone = create(api, schedule=EVERY_15)
    from executions.models import Workflow

    Workflow.objects.filter(id=gone["id"]).delete()  # bypassing the service
    assert periodic(gone["id"]) is not None
    assert run_scheduled(gone["id"]) is None
    assert periodic(gone["id"]) is None
