"""Time limits: node timeouts (Celery's soft limit) and whole-execution deadlines."""

from __future__ import annotations

import time

import pytest

from executions.models import Execution, NodeRun
from executions.services.executions import execution_create
from tests.support.workflows import edge, make_workflow, node, runs_by_node, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def test_node_past_its_timeout_fails_and_is_retried(worker, user):
    wf = make_workflow(
        user,
        [
            node(
                "sleepy",
                "test_behave",
                config={"sleep": 10},
                timeout_seconds=1,
                retry={"max_retries": 1, "backoff_seconds": 0.1, "jitter": False},
            ),
            node("on_timeout"),
        ],
        [edge("sleepy", "on_timeout", "error")],
    )
    t0 = time.monotonic()
    ex, _ = execution_create(workflow=wf, input={})
    ex = wait_for(ex.id, timeout=60)
    elapsed = time.monotonic() - t0
    run = runs_by_node(ex)["sleepy"]
    assert run.status == "failed" and run.attempts == 2
    assert run.output["type"] == "NodeTimeout"
    assert "timeout of 1s" in run.output["message"]
    assert runs_by_node(ex)["on_timeout"].status == "succeeded"
    assert elapsed < 9  # two 1 s attempts, not two 10 s sleeps


def test_execution_past_its_deadline_is_timed_out_and_leaves_nothing_queued(worker, user):
    wf = make_workflow(
        user,
        [
            node("start"),
            node("long", "test_behave", config={"sleep": 8}),
            node("after"),
            node("other"),
        ],
        [edge("start", "long"), edge("long", "after"), edge("start", "other")],
        timeout_seconds=2,
    )
    ex, _ = execution_create(workflow=wf, input={})
    ex = wait_for(ex.id, timeout=30)
    assert ex.status == "timed_out"
    assert ex.error["type"] == "Timeout"
    late = (ex.finished_at - ex.deadline_at).total_seconds()
    assert 0 <= late < 3, late  # within a few seconds of the deadline
    runs = runs_by_node(ex)
    assert runs["long"].status == "cancelled" and runs["after"].status == "cancelled"
    assert not NodeRun.objects.filter(
        execution=ex, status__in=["pending", "queued", "retrying", "running"]
    ).exists()
    # the long node keeps sleeping on its worker; when it ends its result is discarded
    time.sleep(7)
    assert Execution.objects.get(id=ex.id).status == "timed_out"
    assert NodeRun.objects.get(execution=ex, node="after").started_at is None
