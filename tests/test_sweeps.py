"""The stale sweep and retention, with a moved clock; their Beat schedules."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from executions.models import Execution, NodeRun
from executions.services.executions import execution_create
from monitoring.sweeps import retention_sweep, stale_sweep
from tests.support.workflows import edge, make_workflow, node

pytestmark = [pytest.mark.django_db]


def _execution(wf, *, status, age_hours, started=True, finished=False):
    ex, _ = execution_create(workflow=wf, input={})
    created = timezone.now() - timedelta(hours=age_hours)
    Execution.objects.filter(id=ex.id).update(
        status=status,
        created_at=created,
        started_at=created if started else None,
        finished_at=created + timedelta(minutes=1) if finished else None,
    )
    return ex.id


def test_stale_sweep_cancels_exactly_the_stale_ones(user):
    wf = make_workflow(user, [node("a"), node("b")], [edge("a", "b")])
    stale_running = _execution(wf, status="running", age_hours=30)
    stale_pending = _execution(wf, status="pending", age_hours=25, started=False)
    fresh_running = _execution(wf, status="running", age_hours=2)
    old_finished = _execution(wf, status="succeeded", age_hours=48, finished=True)
    old_failed = _execution(wf, status="failed", age_hours=48, finished=True)

    report = stale_sweep(now=timezone.now())
    assert sorted(report.cancelled) == sorted([str(stale_running), str(stale_pending)])
    for ex_id in (stale_running, stale_pending):
        ex = Execution.objects.get(id=ex_id)
        assert ex.status == "cancelled" and ex.error["type"] == "Stale"
        assert "stale" in ex.error["message"]
        assert not NodeRun.objects.filter(
            execution_id=ex_id, status__in=["pending", "queued", "running", "retrying"]
        ).exists()
    assert Execution.objects.get(id=fresh_running).status == "running"
    assert Execution.objects.get(id=old_finished).status == "succeeded"
    assert Execution.objects.get(id=old_failed).status == "failed"

    # Move the clock a day on: the fresh one is stale now; a second pass is a no-op otherwise.
    report = stale_sweep(now=timezone.now() + timedelta(hours=23))
    assert report.cancelled == [str(fresh_running)]
    assert stale_sweep(now=timezone.now() + timedelta(hours=23)).cancelled == []


def test_stale_sweep_works_in_bounded_batches(user):
    wf = make_workflow(user, [node("a")])
    ids = [_execution(wf, status="running", age_hours=40) for _ in range(7)]
    report = stale_sweep(now=timezone.now(), batch=3)
    assert report.batches == 3
    assert sorted(report.cancelled) == sorted(map(str, ids))


def test_retention_deletes_old_finished_executions_only(user):
    wf = make_workflow(user, [node("a")])
    old = [
        _execution(wf, status=s, age_hours=24 * 40, finished=True)
        for s in ("succeeded", "failed", "cancelled", "timed_out")
    ]
    recent = _execution(wf, status="succeeded", age_hours=24 * 3, finished=True)
    old_but_running = _execution(wf, status="running", age_hours=24 * 40)
    deleted = retention_sweep(now=timezone.now(), batch=3)
    assert deleted == 4
    assert not Execution.objects.filter(id__in=old).exists()
    assert not NodeRun.objects.filter(execution_id__in=old).exists()
    assert Execution.objects.filter(id__in=[recent, old_but_running]).count() == 2


def test_sweeps_are_scheduled_by_a_data_migration():
    sweep = PeriodicTask.objects.get(name="weconnect-stale-sweep")
    assert sweep.task == "weconnect.stale_sweep" and sweep.enabled
    c = sweep.crontab
    assert (c.minute, c.hour, c.day_of_month, c.month_of_year, c.day_of_week) == (
        "0",
        "*/6",
        "*",
        "*",
        "*",
    )
    retention = PeriodicTask.objects.get(name="weconnect-retention")
    assert retention.task == "weconnect.retention"


def test_the_schedule_migration_is_idempotent_and_keeps_edits():
    import importlib

    from django.apps import apps

    migration = importlib.import_module("monitoring.migrations.0001_stale_sweep")
    sweep = PeriodicTask.objects.get(name="weconnect-stale-sweep")
    sweep.enabled = False  # an operator's edit in the admin
    sweep.save()
    migration.create(apps, None)
    assert PeriodicTask.objects.filter(name="weconnect-stale-sweep").count() == 1
    assert PeriodicTask.objects.get(name="weconnect-stale-sweep").enabled is False
