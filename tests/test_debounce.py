"""Debounce: triggers with the same key within the window collapse into one execution
(trailing: once after the last trigger with the last input; leading: the first runs, the rest
join it), answered with the execution they joined, exactly under concurrent triggers."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from executions.engine.recovery import recovery_run
from executions.models import Execution
from tests.conftest import client_for
from tests.helpers import make_workflow, node, wait_for, workflow_doc

pytestmark = [pytest.mark.django_db(transaction=True)]


def debounced(user, seconds=5, mode="trailing", key="{{ input.user }}"):
    return make_workflow(
        user,
        [node("a", "test_behave")],  # outputs its input
        debounce={"key": key, "seconds": seconds, "mode": mode},
    )


def execute(api, wf, payload):
    return api.post(f"/api/workflows/{wf.id}/execute/", {"input": payload}, format="json")


@pytest.mark.worker
def test_ten_triggers_in_three_seconds_make_one_execution_with_the_last_input(worker, api, user):
    wf = debounced(user, seconds=5)
    answers = []
    for i in range(10):
        res = execute(api, wf, {"user": "u1", "n": i})
        assert res.status_code == 202, res.content
        answers.append(res.json())
        time.sleep(0.3)
    assert len({a["id"] for a in answers}) == 1
    first = answers[0]
    assert first["status"] == "pending" and first["node_runs"] == []
    assert answers[-1]["debounce_key"] == "u1" and answers[-1]["debounce_triggers"] == 10
    # Nothing runs while the window is open.
    assert Execution.objects.get().status == "pending"
    ex = wait_for(first["id"], timeout=60)
    assert ex.status == "succeeded" and ex.input == {"user": "u1", "n": 9}
    assert ex.output == {"a": {"user": "u1", "n": 9}}
    # It started after the window that followed the last trigger.
    assert ex.node_runs.get().queued_at >= ex.not_before
    assert Execution.objects.count() == 1


@pytest.mark.worker
def test_different_keys_do_not_interfere(worker, api, user):
    wf = debounced(user, seconds=2)
    ids = {}
    for i in range(6):
        who = "alice" if i % 2 == 0 else "bob"
        ids.setdefault(who, set()).add(execute(api, wf, {"user": who, "n": i}).json()["id"])
    assert all(len(v) == 1 for v in ids.values())
    alice, bob = (wait_for(next(iter(ids[w]))) for w in ("alice", "bob"))
    assert alice.id != bob.id
    assert alice.input == {"user": "alice", "n": 4} and bob.input == {"user": "bob", "n": 5}
    assert Execution.objects.count() == 2


@pytest.mark.worker
def test_concurrent_triggers_join_one_window(worker, user):
    wf = debounced(user, seconds=3)
    callers = 12
    gate = threading.Barrier(callers)
    answers: list = [None] * callers

    def trigger(i: int) -> None:
        try:
            api = client_for(user)
            gate.wait()
            answers[i] = execute(api, wf, {"user": "same", "n": i})
        finally:
            connection.close()

    threads = [threading.Thread(target=trigger, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [a.status_code for a in answers] == [202] * callers
    ids = {a.json()["id"] for a in answers}
    assert len(ids) == 1
    ex = wait_for(ids.pop())
    assert ex.status == "succeeded" and ex.debounce_triggers == callers
    assert Execution.objects.count() == 1
    # The input is one of the triggers' (the last to take the window's lock).
    assert ex.input["user"] == "same" and 0 <= ex.input["n"] < callers


@pytest.mark.worker
def test_leading_runs_the_first_and_drops_the_rest(worker, api, user):
    wf = debounced(user, seconds=3, mode="leading")
    first = execute(api, wf, {"user": "u", "n": 0})
    assert first.status_code == 202
    joined = [execute(api, wf, {"user": "u", "n": i}) for i in range(1, 5)]
    assert {r.status_code for r in joined} == {200}
    assert {r.json()["id"] for r in joined} == {first.json()["id"]}
    ex = wait_for(first.json()["id"])
    assert ex.input == {"user": "u", "n": 0} and ex.debounce_triggers == 5
    # After the window a trigger starts a new execution.
    deadline = timezone.now() + timedelta(seconds=30)
    while timezone.now() <= ex.debounce_until and timezone.now() < deadline:
        time.sleep(0.2)
    later = execute(api, wf, {"user": "u", "n": 9})
    assert later.status_code == 202 and later.json()["id"] != str(ex.id)
    assert wait_for(later.json()["id"]).input == {"user": "u", "n": 9}


def test_recovery_starts_a_window_whose_countdown_was_lost(api, user):
    from tests.support.broker import PrivateBroker

    wf = debounced(user, seconds=1)
    with PrivateBroker():  # the countdown goes to a broker no worker reads
        ex_id = execute(api, wf, {"user": "x"}).json()["id"]
        assert recovery_run().deferred_started == 0  # the window is still open
        report = recovery_run(now=timezone.now() + timedelta(seconds=5))
    assert report.deferred_started == 1
    ex = Execution.objects.get(id=ex_id)
    assert not ex.deferred and ex.node_runs.get().status == "queued"
    assert ex.node_runs.get().input == {"user": "x"}


def test_cancelled_window_never_starts(api, user):
    from tests.support.broker import PrivateBroker

    wf = debounced(user, seconds=1)
    with PrivateBroker():
        ex_id = execute(api, wf, {"user": "x"}).json()["id"]
        assert api.post(f"/api/executions/{ex_id}/cancel/").status_code == 200
        assert recovery_run(now=timezone.now() + timedelta(seconds=5)).deferred_started == 0
    assert not Execution.objects.get(id=ex_id).node_runs.exists()


def test_a_key_the_input_cannot_render_is_400(api, user):
    wf = debounced(user, key="{{ input.customer.id }}")
    res = execute(api, wf, {"user": "u"})
    assert res.status_code == 400 and "debounce key" in res.json()["input"][0]
    assert not Execution.objects.exists()


@pytest.mark.parametrize(
    ("debounce", "field", "reason"),
    [
        ({"key": "k", "seconds": 0}, "seconds", "greater than or equal"),
        ({"key": "k", "seconds": 5, "mode": "middle"}, "mode", "not a valid choice"),
        ({"key": "{{ input.", "seconds": 5}, "key", "does not compile"),
        ({"seconds": 5}, "key", "required"),
    ],
)
def test_bad_debounce_is_400_naming_the_field(api, debounce, field, reason):
    res = api.post("/api/workflows/", workflow_doc([node("a")], debounce=debounce), format="json")
    assert res.status_code == 400
    assert any(reason in e for e in res.json()["debounce"][field]), res.json()
