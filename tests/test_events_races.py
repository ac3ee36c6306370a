"""The guarantees of waiting runs under stress: resumed at most once when the resume link, the
API and an event race; nothing held or queued while 1,000 runs wait; nothing lost when the
process that resumed a run dies or the broker is down at that moment."""

from __future__ import annotations

import threading
import time
from urllib.parse import urlsplit

import pytest
import redis
from django.db import connection
from rest_framework.test import APIClient

from executions.engine.recovery import recovery_run
from executions.events.models import EventWait
from executions.events.waits import resume_url
from executions.models import NodeRun
from executions.services.executions import execution_create
from tests.conftest import client_for
from tests.support.broker import PrivateBroker
from tests.support.workflows import edge, make_workflow, node, runs_by_node, wait_all
from tests.test_events import wait_parked
from tests.test_recovery import FAST_LEASE, drive_until_done

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def fast_recovery(settings):
    settings.WECONNECT_REDISPATCH_AFTER_SECONDS = 1
    return settings


def _in_thread(fn, results: dict, name: str, barrier: threading.Barrier):
    def target():
        try:
            barrier.wait(timeout=30)
            results[name] = fn()
        except Exception as exc:  # reported by the assertion on results
            results[name] = exc
        finally:
            connection.close()  # each thread has its own database connection

    return threading.Thread(target=target, name=name)


@pytest.mark.worker
def test_link_api_and_event_racing_resume_each_run_once(worker, user):
    wf = make_workflow(
        user,
        [
            node("wait", "wait_for_event", config={"event": "decided", "match": "{{ input.k }}"}),
            node("after"),
        ],
        [edge("wait", "after")],
    )
    executions = [execution_create(workflow=wf, input={"k": f"r-{i}"})[0] for i in range(12)]
    for ex in executions:
        wait_parked(ex.id)
    token_client = client_for(user)
    winners = {}
    for ex in executions:
        path = urlsplit(resume_url(ex.id, "wait")).path
        calls = {
            "url": lambda path=path: APIClient().post(path, {"by": "url"}, format="json"),
            "api": lambda ex=ex: token_client.post(
                f"/api/executions/{ex.id}/resume/",
                {"node": "wait", "data": {"by": "api"}},
                format="json",
            ),
            "event": lambda ex=ex: token_client.post(
                "/api/events/",
                {"name": "decided", "key": ex.input["k"], "data": {"by": "event"}},
                format="json",
            ),
        }
        results: dict = {}
        barrier = threading.Barrier(len(calls))
        threads = [_in_thread(fn, results, name, barrier) for name, fn in calls.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        codes = {name: getattr(r, "status_code", r) for name, r in results.items()}
        won = [n for n in ("url", "api") if codes[n] == 200]
        if results["event"].json()["resumed"]:
            won.append("event")
        losers = [n for n in ("url", "api") if n not in won]
        assert len(won) == 1, (ex.id, codes, results["event"].json())
        assert all(codes[n] == 409 for n in losers), codes
        winners[ex.id] = won[0]

    for ex in wait_all([e.id for e in executions], timeout=120):
        assert ex.status == "succeeded", ex.error
        runs = runs_by_node(ex)
        assert runs["wait"].output == {"by": winners[ex.id]}
        assert runs["after"].attempts == 1
        assert EventWait.objects.get(execution=ex).source == winners[ex.id]
    # Which way wins is up to the race; over a dozen runs it is rarely always the same one.
    print("winners:", sorted(winners.values()))


def _queued_or_unacked(url: str) -> dict[str, int]:
    """Messages held anywhere in a Redis broker: queued in lists, or unacknowledged (taken by
    a worker, which is where every countdown/ETA message waits)."""
    client = redis.Redis.from_url(url)
    found = {}
    for name in client.scan_iter(count=1000):
        key = name.decode()
        kind = client.type(name).decode()
        if kind == "list" and client.llen(name):
            found[key] = client.llen(name)
        elif kind == "hash" and "unacked" in key and client.hlen(name):
            found[key] = client.hlen(name)
    return found


def test_a_thousand_waiting_runs_hold_no_worker_and_no_message(user, fast_recovery):
    wf = make_workflow(
        user,
        [node("wait", "wait_for_event", config={"event": "go", "timeout_seconds": 3600})],
    )
    with PrivateBroker() as broker:
        broker.worker("waits", concurrency=2).start()
        t0 = time.monotonic()
        ids = [execution_create(workflow=wf, input={"i": i})[0].id for i in range(1000)]
        deadline = time.monotonic() + 300
        while (
            NodeRun.objects.filter(
                execution_id__in=ids, status="queued", state__isnull=False
            ).count()
            < 1000
        ):
            assert time.monotonic() < deadline, "runs did not all park"
            time.sleep(0.5)
        parked_after = time.monotonic() - t0
        # Parked: no message exists for any of them (none sent, none queued, none prefetched
        # with a countdown), and no process runs them.
        time.sleep(2)
        assert not _queued_or_unacked(broker.url)
        runs = NodeRun.objects.filter(execution_id__in=ids, node="wait")
        assert runs.filter(status="queued", dispatched_at__isnull=True).count() == 1000
        assert not runs.filter(status="running").exists()
        # A recovery pass (as Beat runs it) sends none of them before their give-up time.
        assert recovery_run().redispatched == 0
        assert not _queued_or_unacked(broker.url)

        # One event (the waits have no key: any key matches) resumes all of them.
        t1 = time.monotonic()
        res = client_for(user).post(
            "/api/events/", {"name": "go", "data": {"ok": 1}}, format="json"
        )
        answered = time.monotonic() - t1
        assert res.status_code == 202 and len(res.json()["resumed"]) == 1000
        done = wait_all(ids, timeout=300)
        finished = time.monotonic() - t1
    assert {e.status for e in done} == {"succeeded"}
    print(
        f"1000 waits parked in {parked_after:.1f}s; one event resumed them in {answered:.1f}s, "
        f"all finished {finished:.1f}s after it"
    )


def test_resumed_run_completes_when_the_worker_is_sigkilled_right_after(user, fast_recovery):
    wf = make_workflow(
        user,
        [
            node("wait", "wait_for_event", config={"event": "ok"}),
            node("slow", "test_behave", config={"sleep": 1}),
            node("after"),
        ],
        [edge("wait", "slow"), edge("slow", "after")],
    )
    api = client_for(user)
    with PrivateBroker() as broker:
        first = broker.worker("k1", concurrency=2, **FAST_LEASE).start()
        ids = [execution_create(workflow=wf, input={"i": i})[0].id for i in range(4)]
        for i in ids:
            wait_parked(i)
        for i in ids:
            res = api.post(f"/api/executions/{i}/resume/", {"data": {"n": str(i)}}, format="json")
            assert res.status_code == 200
        first.kill()  # the whole worker, right after the resumes, wherever it was
        assert EventWait.objects.filter(execution_id__in=ids, outcome="resumed").count() == 4
        broker.worker("k2", concurrency=2, **FAST_LEASE).start()
        executions = drive_until_done(ids, timeout=120)
    assert {e.status for e in executions} == {"succeeded"}
    for ex in executions:
        runs = runs_by_node(ex)
        assert runs["wait"].output == {"n": str(ex.id)}
        assert runs["after"].input == {"n": str(ex.id)}


def test_resume_while_the_broker_is_down_is_sent_by_recovery(user, fast_recovery):
    wf = make_workflow(
        user,
        [node("wait", "wait_for_event", config={"event": "ok"}), node("b")],
        [edge("wait", "b")],
    )
    api = client_for(user)
    with PrivateBroker() as broker:
        broker.worker("bd", concurrency=1).start()
        ex, _ = execution_create(workflow=wf, input={})
        wait_parked(ex.id)
        broker.stop()
        res = api.post(f"/api/executions/{ex.id}/resume/", {"data": {"late": True}}, format="json")
        assert res.status_code == 200  # the payload is stored; the message could not be sent
        assert EventWait.objects.get(execution=ex).payload == {"late": True}
        broker.start()
        executions = drive_until_done([ex.id], timeout=120)
    assert executions[0].status == "succeeded"
    assert runs_by_node(executions[0])["wait"].output == {"late": True}


@pytest.mark.worker
def test_events_racing_the_start_of_their_waiters_are_never_missed(worker, user):
    # Each event is sent while its waiter is starting: before it runs, while it runs its first
    # attempt, or after it parked. Whichever order happens, every waiter resumes with it.
    wf = make_workflow(
        user,
        [
            node("a"),
            node("wait", "wait_for_event", config={"event": "shipped", "match": "{{ input.k }}"}),
        ],
        [edge("a", "wait")],
    )
    keys = [f"s-{i}" for i in range(30)]
    ids: list = []
    results: dict = {}
    barrier = threading.Barrier(2)

    def send_events():
        client = client_for(user)
        # In reverse: the last waiters to start get their events first, the first ones last.
        for k in reversed(keys):
            client.post(
                "/api/events/", {"name": "shipped", "key": k, "data": {"k": k}}, format="json"
            )

    sender = _in_thread(send_events, results, "events", barrier)
    sender.start()
    barrier.wait(timeout=30)
    for k in keys:
        ids.append(execution_create(workflow=wf, input={"k": k})[0].id)
    sender.join(timeout=120)
    assert not isinstance(results.get("events"), Exception), results
    done = wait_all(ids, timeout=120)
    assert {e.status for e in done} == {"succeeded"}, [(e.id, e.status) for e in done]
    for ex in done:
        assert runs_by_node(ex)["wait"].output == {"k": ex.input["k"]}
    sources = sorted(
        "retained" if w.event and w.event.created_at < w.created_at else "delivered"
        for w in EventWait.objects.filter(execution_id__in=ids).select_related("event")
    )
    print("resumed by:", {s: sources.count(s) for s in set(sources)})
    assert EventWait.objects.filter(execution_id__in=ids, outcome="resumed").count() == len(keys)
