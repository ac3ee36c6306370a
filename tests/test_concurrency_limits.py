"""Concurrency limits per workflow and per key: at most `limit` executions hold a slot, the rest
wait in line as `queued` and start in arrival order; cancel_in_progress and cancel_newest; every
way an execution ends releases its slot, and recovery admits what a lost release left waiting."""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from executions import store
from executions.engine.recovery import recovery_run
from executions.models import Execution
from executions.services.executions import execution_cancel, execution_create
from executions.states import EXECUTION_HOLDING_SLOT
from monitoring.sweeps import stale_sweep
from tests.support.gunicorn import WebProcess
from tests.support.workflows import make_workflow, node, wait_all, wait_for

pytestmark = [pytest.mark.django_db(transaction=True)]


def limited(user, limit=3, key="", strategy="queue", sleep=1.0, **extra):
    return make_workflow(
        user,
        [node("work", "test_behave", config={"sleep": sleep})],
        concurrency={"limit": limit, "key": key, "strategy": strategy},
        **extra,
    )


class HoldingSampler(threading.Thread):
    """The most executions of a workflow holding a slot at once, sampled every 20 ms."""

    def __init__(self, workflow, key=None) -> None:
        super().__init__(daemon=True)
        self.filters = {"workflow": workflow}
        if key is not None:
            self.filters["concurrency_key"] = key
        self.stop = threading.Event()
        self.most = 0

    def run(self) -> None:
        from django.db import connection

        try:
            while not self.stop.wait(0.02):
                n = Execution.objects.filter(
                    status__in=EXECUTION_HOLDING_SLOT, **self.filters
                ).count()
                self.most = max(self.most, n)
        finally:
            connection.close()


def test_fifty_triggers_through_two_web_processes_never_exceed_the_limit(worker, user, api):
    wf = limited(user, limit=3, sleep=0.3)
    from rest_framework.authtoken.models import Token

    key = Token.objects.get(user=user).key
    webs = [WebProcess(), WebProcess()]
    sampler = HoldingSampler(wf)
    try:
        for w in webs:
            w.wait_ready()
        sampler.start()
        answers: list = [None] * 50
        gate = threading.Barrier(50)

        def call(i: int) -> None:
            with httpx.Client(timeout=60) as client:
                gate.wait()
                res = client.post(
                    webs[i % 2].url(f"/api/workflows/{wf.id}/execute/"),
                    json={"input": {"i": i}},
                    headers={"Authorization": f"Token {key}"},
                )
                answers[i] = (res.status_code, res.json())

        threads = [threading.Thread(target=call, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert [a[0] for a in answers] == [202] * 50, [a for a in answers if a[0] != 202][:3]
        statuses = {a[1]["status"] for a in answers}
        assert "queued" in statuses
        ids = [a[1]["id"] for a in answers]
        done = wait_all(ids, timeout=240)
    finally:
        sampler.stop.set()
        sampler.join()
        for w in webs:
            w.stop()
    assert {e.status for e in done} == {"succeeded"}
    assert 1 <= sampler.most <= 3, sampler.most
    # In arrival order: no execution was admitted (its node run written and queued) before one
    # that arrived earlier.
    by_arrival = sorted(done, key=lambda e: (e.created_at, str(e.id)))
    admitted = [e.node_runs.get(node="work").queued_at for e in by_arrival]
    late = [
        (a.id, b.id)
        for a, b, ta, tb in zip(by_arrival, by_arrival[1:], admitted, admitted[1:], strict=False)
        if tb < ta
    ]
    assert not late, late[:3]


def test_queued_executions_show_their_place_in_line_and_filter(worker, user, api):
    wf = limited(user, limit=1, sleep=2.0)
    ids = [str(execution_create(workflow=wf, input={"i": i})[0].id) for i in range(3)]
    docs = [api.get(f"/api/executions/{i}/").json() for i in ids]
    assert docs[0]["status"] in ("pending", "running")
    assert [d["status"] for d in docs[1:]] == ["queued", "queued"]
    assert [d["queue_position"] for d in docs] == [None, 1, 2]
    listed = api.get(f"/api/executions/?workflow={wf.id}&status=queued").json()["results"]
    assert sorted(r["id"] for r in listed) == sorted(ids[1:])
    assert {r["queue_position"] for r in listed} == {1, 2}
    done = wait_all(ids, timeout=60)
    assert {e.status for e in done} == {"succeeded"}


def test_a_key_limits_each_value_on_its_own(worker, user):
    wf = limited(user, limit=1, key="{{ input.customer }}", sleep=1.0)
    a1, _ = execution_create(workflow=wf, input={"customer": "a"})
    a2, _ = execution_create(workflow=wf, input={"customer": "a"})
    b1, _ = execution_create(workflow=wf, input={"customer": "b"})
    statuses = [Execution.objects.get(id=e.id).status for e in (a1, a2, b1)]
    assert statuses[1] == "queued" and {statuses[0], statuses[2]} <= {"pending", "running"}
    assert Execution.objects.get(id=a2.id).concurrency_key == "a"
    assert {e.status for e in wait_all([a1.id, a2.id, b1.id], timeout=60)} == {"succeeded"}


def test_cancel_in_progress_cancels_the_running_one(worker, user):
    wf = limited(user, limit=1, strategy="cancel_in_progress", sleep=3.0)
    first, _ = execution_create(workflow=wf, input={"n": 1})
    wait_for(first.id, statuses=["running"], timeout=30)
    second, _ = execution_create(workflow=wf, input={"n": 2})
    first = wait_for(first.id, timeout=30)
    assert first.status == "cancelled"
    assert (
        "cancel_in_progress" in first.error["message"] and str(second.id) in first.error["message"]
    )
    assert wait_for(second.id, timeout=30).status == "succeeded"


def test_cancel_newest_refuses_while_the_key_is_busy(worker, user, api):
    wf = limited(user, limit=1, strategy="cancel_newest", sleep=2.0)
    first = api.post(f"/api/workflows/{wf.id}/execute/", {"input": {}}, format="json").json()
    second = api.post(f"/api/workflows/{wf.id}/execute/", {"input": {}}, format="json").json()
    assert second["status"] == "cancelled"
    assert second["error"]["type"] == "ConcurrencyLimitReached"
    assert "cancel_newest" in second["error"]["message"]
    assert second["node_runs"] == []
    assert wait_for(first["id"], timeout=30).status == "succeeded"
    third = api.post(f"/api/workflows/{wf.id}/execute/", {"input": {}}, format="json").json()
    assert third["status"] in ("pending", "running")  # the slot is free again


@pytest.mark.parametrize("ending", ["failure", "cancel", "time_out", "stale_sweep"])
def test_every_ending_releases_the_slot(worker, user, ending, settings):
    if ending == "failure":
        wf = make_workflow(
            user,
            [node("work", "test_behave", config={"fail_attempts": 9, "retryable": False})],
            concurrency={"limit": 1},
        )
    else:
        wf = limited(user, limit=1, sleep=6.0, timeout_seconds=2 if ending == "time_out" else 60)
    first, _ = execution_create(workflow=wf, input={"n": 1})
    second, _ = execution_create(workflow=wf, input={"n": 2})
    assert Execution.objects.get(id=second.id).status == "queued"
    if ending == "cancel":
        execution_cancel(execution=Execution.objects.get(id=first.id))
    elif ending == "stale_sweep":
        wait_for(first.id, statuses=["running"], timeout=30)
        stale_sweep(now=timezone.now() + timedelta(days=2), stale_after=60)
    elif ending == "time_out":
        deadline = time.monotonic() + 30
        while Execution.objects.get(id=first.id).status != "timed_out":
            assert time.monotonic() < deadline
            recovery_run()  # as Beat would: the deadline scan
            time.sleep(0.2)
    first = wait_for(first.id, timeout=30)
    expected = {"failure": "failed", "cancel": "cancelled", "time_out": "timed_out"}
    assert first.status == expected.get(ending, "cancelled")
    # The next in line was admitted by the release and started.
    second = wait_for(second.id, statuses=["running", "succeeded", "failed"], timeout=30)
    assert second.status in ("running", "succeeded", "failed")
    assert second.started_at is not None


def test_recovery_admits_an_execution_whose_release_was_lost(worker, user):
    wf = limited(user, limit=1, sleep=0.2)
    first, _ = execution_create(workflow=wf, input={"n": 1})
    second, _ = execution_create(workflow=wf, input={"n": 2})
    assert Execution.objects.get(id=second.id).status == "queued"
    # The first ends through the store alone, as if its process died before the release.
    store.execution_end(
        execution_id=first.id, status="cancelled", error={"message": "x"}, now=timezone.now()
    )
    time.sleep(1)
    assert Execution.objects.get(id=second.id).status == "queued"
    report = recovery_run()
    assert report.admitted == 1
    assert wait_for(second.id, timeout=30).status == "succeeded"


def test_a_queued_execution_can_be_cancelled_and_starts_nothing(worker, user):
    wf = limited(user, limit=1, sleep=2.0)
    first, _ = execution_create(workflow=wf, input={"n": 1})
    second, _ = execution_create(workflow=wf, input={"n": 2})
    execution_cancel(execution=Execution.objects.get(id=second.id))
    assert wait_for(first.id, timeout=30).status == "succeeded"
    second = Execution.objects.get(id=second.id)
    assert second.status == "cancelled" and second.node_runs.count() == 0


def test_bad_settings_are_refused_naming_the_field(api):
    def save(concurrency):
        doc = {"name": "x", "nodes": [{"key": "a", "type": "noop"}], "concurrency": concurrency}
        return api.post("/api/workflows/", doc, format="json")

    res = save({"limit": 0})
    assert res.status_code == 400 and "limit" in res.json()["concurrency"]
    res = save({"limit": 2, "strategy": "drop"})
    assert res.status_code == 400 and "strategy" in res.json()["concurrency"]
    res = save({"limit": 2, "key": "{{ input.x "})
    assert res.status_code == 400 and "key" in res.json()["concurrency"]
    ok = save({"limit": 2, "key": "{{ input.customer }}"})
    assert ok.status_code == 201
    assert ok.json()["concurrency"] == {
        "limit": 2,
        "key": "{{ input.customer }}",
        "strategy": "queue",
    }


def test_a_key_the_input_cannot_render_is_400(api, user):
    wf = make_workflow(
        user,
        [node("a")],
        concurrency={"limit": 1, "key": "{{ input.customer.id }}"},
    )
    res = api.post(f"/api/workflows/{wf.id}/execute/", {"input": {}}, format="json")
    assert res.status_code == 400 and "concurrency key" in str(res.json()["input"])
    assert not Execution.objects.filter(workflow=wf).exists()


def test_the_admin_shows_queued_executions_and_their_place_in_line(worker, user, admin_client):
    wf = limited(user, limit=1, sleep=2.0)
    ids = [execution_create(workflow=wf, input={"i": i})[0].id for i in range(3)]
    listing = admin_client.get("/admin/executions/execution/?status__exact=queued")
    assert listing.status_code == 200
    html = listing.content.decode()
    assert f'title="{ids[1]}"' in html and f'title="{ids[2]}"' in html
    assert f'title="{ids[0]}"' not in html
    page = admin_client.get(f"/admin/executions/execution/{ids[2]}/change/").content.decode()
    assert re.search(r"place in line.*?<div class=\"readonly\">2</div>", page, re.S | re.I)
    assert {e.status for e in wait_all(ids, timeout=60)} == {"succeeded"}
