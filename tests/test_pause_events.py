"""Pause and unpause (status ``paused``) and the per-execution event log."""

from __future__ import annotations

import time

import pytest
from django.db import transaction

from executions.models import Execution, NodeRun
from executions.services.executions import execution_create
from executions.services.pause import execution_pause
from tests.support.workflows import edge, make_workflow, node, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

RETRY = {"max_retries": 2, "backoff_seconds": 0.05, "max_backoff_seconds": 1, "jitter": False}


def url(execution, what: str) -> str:
    return f"/api/executions/{execution.id}/{what}/"


def wait_run(execution, node_key: str, statuses: set[str], timeout: float = 60) -> NodeRun:
    deadline = time.monotonic() + timeout
    while True:
        run = NodeRun.objects.get(execution=execution, node=node_key)
        if run.status in statuses:
            return run
        assert time.monotonic() < deadline, f"{node_key} still {run.status}"
        time.sleep(0.05)


def stays(execution, node_key: str, statuses: set[str], seconds: float) -> None:
    """Watch a run for a while: it must not leave ``statuses`` (a worker is free meanwhile)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        run = NodeRun.objects.get(execution=execution, node=node_key)
        assert run.status in statuses and run.started_at is None, (node_key, run.status)
        time.sleep(0.1)


def test_pause_lets_running_nodes_finish_and_starts_nothing(api, worker, user):
    wf = make_workflow(
        user,
        [node("a", "test_behave", config={"sleep": 1.5}), node("b"), node("c")],
        [edge("a", "b"), edge("b", "c")],
    )
    execution, _ = execution_create(workflow=wf, input={"x": 1})
    wait_run(execution, "a", {"running"})
    response = api.post(url(execution, "pause"))
    assert response.status_code == 200 and response.json()["status"] == "paused"
    # The running node finishes and its result is kept...
    wait_run(execution, "a", {"succeeded"})
    # ...but nothing starts after it while paused.
    stays(execution, "b", {"pending", "queued"}, seconds=1.5)
    assert Execution.objects.get(id=execution.id).status == "paused"
    assert api.post(url(execution, "pause")).status_code == 409

    response = api.post(url(execution, "unpause"))
    # Running again (or already finished: the worker may be quicker than the answer).
    assert response.status_code == 200 and response.json()["status"] in ("running", "succeeded")
    done = wait_for(execution.id)
    assert done.status == "succeeded"
    assert NodeRun.objects.get(execution=execution, node="c").input == {"x": 1}
    assert api.post(url(execution, "unpause")).status_code == 409

    events = api.get(url(execution, "events")).json()
    names = [(e["event"], e["node"]) for e in events]
    assert names.index(("paused", None)) < names.index(("unpaused", None))
    assert names.index(("unpaused", None)) < names.index(("started", "b"))
    assert events[-1]["event"] == "succeeded" and events[-1]["node"] is None
    assert [e for e in events if e["event"] == "paused"][0]["actor"] == "alice"


def test_queued_runs_stay_queued_and_unpause_dispatches_them(api, worker, user):
    wf = make_workflow(user, [node("only")])
    with transaction.atomic():
        # Paused before its first message is even sent (sent after commit).
        execution, _ = execution_create(workflow=wf, input={})
        execution_pause(execution=execution)
    stays(execution, "only", {"queued"}, seconds=1.5)
    assert NodeRun.objects.get(execution=execution).attempts == 0
    assert api.post(url(execution, "unpause")).status_code == 200
    assert wait_for(execution.id).status == "succeeded"


def test_a_paused_execution_still_times_out_and_can_be_cancelled(api, worker, user):
    wf = make_workflow(user, [node("only")], timeout_seconds=2)
    with transaction.atomic():
        execution, _ = execution_create(workflow=wf, input={})
        execution_pause(execution=execution)
    assert wait_for(execution.id, timeout=60).status == "timed_out"
    assert NodeRun.objects.get(execution=execution).status == "cancelled"

    other = make_workflow(user, [node("only")], name="other")
    with transaction.atomic():
        execution, _ = execution_create(workflow=other, input={})
        execution_pause(execution=execution)
    assert api.post(url(execution, "cancel")).json()["status"] == "cancelled"
    assert api.post(url(execution, "unpause")).status_code == 409


def test_events_of_a_retried_failure(api, worker, user):
    wf = make_workflow(
        user, [node("flaky", "test_behave", config={"fail_attempts": 9}, retry=RETRY)]
    )
    execution = wait_for(execution_create(workflow=wf, input={})[0].id)
    events = api.get(url(execution, "events")).json()
    flaky = [(e["event"], e.get("attempt")) for e in events if e["node"] == "flaky"]
    assert flaky == [
        ("queued", None),
        ("started", 1),
        ("attempt_failed", 1),
        ("retry_wait", 1),
        ("started", 2),
        ("attempt_failed", 2),
        ("retry_wait", 2),
        ("started", 3),
        ("failed", 3),
    ]
    waits = [e["seconds"] for e in events if e["event"] == "retry_wait"]
    assert waits == [0.05, 0.1]
    # Every attempt has its start, end and worker; each wait ends where the next attempt
    # could start.
    mine = [e for e in events if e["node"] == "flaky"]
    assert all(e["at"] for e in mine)
    assert {e["worker"] for e in mine if e["event"] == "started"} == {worker.hostname}
    first_failed = next(e for e in mine if e["event"] == "attempt_failed")
    assert first_failed["error"]["message"] == "planned failure on attempt 1"
    starts = [e["at"] for e in mine if e["event"] == "started"]
    assert starts == sorted(starts)
    failed = next(e for e in events if e["event"] == "failed" and e["node"] == "flaky")
    assert failed["error"]["message"] == "planned failure on attempt 3"
    assert events[0]["event"] == "created" and events[-1]["event"] == "failed"
    assert (
        api.get("/api/executions/00000000-0000-0000-0000-000000000000/events/").status_code == 404
    )


def test_admin_pause_and_unpause_buttons(admin_client, worker, user):
    wf = make_workflow(
        user, [node("a", "test_behave", config={"sleep": 1}), node("b")], [edge("a", "b")]
    )
    execution, _ = execution_create(workflow=wf, input={})
    wait_run(execution, "a", {"running"})
    page = admin_client.get(f"/admin/executions/execution/{execution.id}/change/").content.decode()
    assert 'id="wc-pause"' in page
    admin_client.post(f"/admin/executions/execution/{execution.id}/pause/")
    assert Execution.objects.get(id=execution.id).status == "paused"
    page = admin_client.get(f"/admin/executions/execution/{execution.id}/change/").content.decode()
    assert 'id="wc-unpause"' in page and 'id="wc-pause"' not in page
    wait_run(execution, "a", {"succeeded"})
    admin_client.post(f"/admin/executions/execution/{execution.id}/unpause/")
    done = wait_for(execution.id)
    assert done.status == "succeeded", (done.error, list(done.node_runs.values()))
