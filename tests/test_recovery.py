"""Breaking things for real: a broker that is down or loses its queue, workers killed with
SIGKILL, long backoffs held in the database. Each test runs its own Redis broker and worker
processes (tests/support/broker.py), so it can stop and restart them freely."""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis

from executions.engine.recovery import recovery_run
from executions.models import Execution, NodeRun
from executions.services.executions import execution_create
from tests.support.broker import PrivateBroker
from tests.support.workflows import edge, make_workflow, node

pytestmark = [pytest.mark.django_db(transaction=True)]

FAST_LEASE = {"WECONNECT_LEASE_SECONDS": "3", "WECONNECT_HEARTBEAT_SECONDS": "1"}


@pytest.fixture
def fast_recovery(settings):
    settings.WECONNECT_REDISPATCH_AFTER_SECONDS = 1
    return settings


def drive_until_done(ids, timeout=90, interval=0.5):
    """Run the recovery pass (as Beat would) until every execution has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recovery_run()
        if Execution.objects.filter(id__in=ids, status__in=["pending", "running"]).count() == 0:
            return list(Execution.objects.filter(id__in=ids))
        time.sleep(interval)
    left = list(
        NodeRun.objects.filter(execution_id__in=ids)
        .exclude(status__in=["succeeded", "skipped"])
        .values_list("node", "status", "attempts")
    )
    raise AssertionError(f"not finished after {timeout}s: {left}")


def wait_running(node_key, count=1, timeout=30):
    deadline = time.monotonic() + timeout
    while NodeRun.objects.filter(node=node_key, status="running").count() < count:
        assert time.monotonic() < deadline, f"{node_key} never running"
        time.sleep(0.05)


def test_broker_down_at_trigger_time_then_back(api, user, fast_recovery):
    wf = make_workflow(user, [node("a"), node("b")], [edge("a", "b")])
    with PrivateBroker() as broker:
        broker.worker("bd").start()
        broker.stop()
        t0 = time.monotonic()
        r = api.post(f"/api/workflows/{wf.id}/execute/", {"input": {"k": 1}}, format="json")
        answered_in = time.monotonic() - t0
        assert r.status_code == 202
        assert answered_in < 5, answered_in
        ex_id = r.json()["id"]
        assert NodeRun.objects.get(execution_id=ex_id, node="a").status == "queued"
        time.sleep(1.5)
        assert (
            Execution.objects.get(id=ex_id).status == "pending"
        )  # nothing ran: the message was lost
        broker.start()
        [ex] = drive_until_done([ex_id])
        assert ex.status == "succeeded" and ex.output == {"b": {"k": 1}}
        assert set(ex.node_runs.values_list("attempts", flat=True)) == {1}


def test_redis_restart_loses_the_queue_and_everything_still_completes(user, fast_recovery):
    wf = make_workflow(
        user,
        [node("slow", "test_behave", config={"sleep": 0.5}), node("next")],
        [edge("slow", "next")],
    )
    with PrivateBroker() as broker:
        broker.worker("rr", concurrency=1).start()
        ids = [execution_create(workflow=wf, input={"i": i})[0].id for i in range(6)]
        wait_running("slow")
        queued_in_redis = redis.Redis.from_url(broker.url).dbsize()
        assert queued_in_redis > 0
        broker.restart()  # nothing on disk: every queued message is gone
        executions = drive_until_done(ids, timeout=120)
    assert {e.status for e in executions} == {"succeeded"}
    runs = NodeRun.objects.filter(execution_id__in=ids)
    assert runs.count() == 12
    assert set(runs.filter(node="next").values_list("attempts", flat=True)) == {1}


def test_worker_sigkilled_mid_node_runs_are_reclaimed(user, fast_recovery):
    wf = make_workflow(
        user,
        [node("a"), node("slow", "test_behave", config={"sleep": 2}), node("c"), node("d")],
        [edge("a", "slow"), edge("slow", "c"), edge("a", "d"), edge("c", "d")],
    )
    with PrivateBroker() as broker:
        first = broker.worker("k1", concurrency=2, **FAST_LEASE).start()
        ids = [execution_create(workflow=wf, input={"i": i})[0].id for i in range(4)]
        wait_running("slow", count=2)
        first.kill()  # the whole worker, parent and pool children, at once
        killed = set(
            NodeRun.objects.filter(node="slow", status="running").values_list(
                "execution_id", flat=True
            )
        )
        assert len(killed) == 2
        broker.worker("k2", concurrency=2, **FAST_LEASE).start()
        executions = drive_until_done(ids, timeout=120)
    assert {e.status for e in executions} == {"succeeded"}
    for ex_id in killed:
        slow = NodeRun.objects.get(execution_id=ex_id, node="slow")
        assert slow.reassignments >= 1 and slow.attempts >= 2
    # Every successor ran exactly once.
    for key in ("a", "c", "d"):
        assert set(
            NodeRun.objects.filter(execution_id__in=ids, node=key).values_list(
                "attempts", flat=True
            )
        ) == {1}


def test_pool_child_sigkilled_message_redelivered_and_taken_over(user):
    wf = make_workflow(
        user,
        [node("slow", "test_behave", config={"sleep": 2}), node("after")],
        [edge("slow", "after")],
    )
    with PrivateBroker() as broker:
        w = broker.worker("child", concurrency=1, **FAST_LEASE).start()
        ex, _ = execution_create(workflow=wf, input={})
        wait_running("slow")
        [child] = w.child_pids()
        os.kill(child, signal.SIGKILL)
        # No recovery pass here: the parent notices, the message comes back marked
        # redelivered, and the task takes over its own run.
        deadline = time.monotonic() + 60
        while Execution.objects.get(id=ex.id).status != "succeeded":
            assert time.monotonic() < deadline, list(
                NodeRun.objects.filter(execution=ex).values_list("node", "status", "attempts")
            )
            time.sleep(0.1)
    slow = NodeRun.objects.get(execution=ex, node="slow")
    assert slow.attempts == 2 and slow.reassignments == 1
    assert NodeRun.objects.get(execution=ex, node="after").attempts == 1


def test_long_backoff_is_held_in_the_database_not_as_an_eta(user, fast_recovery):
    wf = make_workflow(
        user,
        [
            node(
                "flaky",
                "test_behave",
                config={"fail_attempts": 1},
                retry={
                    "max_retries": 2,
                    "backoff_seconds": 3,
                    "max_backoff_seconds": 3,
                    "jitter": False,
                },
            )
        ],
    )
    with PrivateBroker() as broker:
        broker.worker("eta", WECONNECT_MAX_ETA_SECONDS="1").start()
        ex, _ = execution_create(workflow=wf, input={})
        deadline = time.monotonic() + 30
        while (run := NodeRun.objects.get(execution=ex)).status != "retrying":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert run.dispatched_at is None  # no message sent: the wait lives in next_attempt_at
        assert run.retry_delays == [3.0]
        queue_keys = [
            k
            for k in redis.Redis.from_url(broker.url).keys("*")
            if not k.startswith(b"_kombu") and b"unacked" not in k
        ]
        assert all(
            redis.Redis.from_url(broker.url).llen(k) == 0
            for k in queue_keys
            if redis.Redis.from_url(broker.url).type(k) == b"list"
        )
        assert recovery_run().redispatched == 0  # not due yet
        time.sleep(max(0.0, (run.next_attempt_at - run.started_at).total_seconds() - 0.5))
        [done] = drive_until_done([ex.id], timeout=30, interval=0.2)
    run = NodeRun.objects.get(execution=ex)
    assert done.status == "succeeded" and run.attempts == 2
    assert (run.started_at - run.queued_at).total_seconds() >= 3.0


WATCH = {
    "WECONNECT_RECOVERY_FALLBACK_SECONDS": "2",
    "WECONNECT_RECOVERY_INTERVAL_SECONDS": "1",
    "WECONNECT_REDISPATCH_AFTER_SECONDS": "1",
}


def _fallback_passes(broker_url: str, settings) -> int:
    raw = redis.Redis.from_url(broker_url).hget(
        f"{settings.WECONNECT_KEY_PREFIX}metrics:recovery", "fallback_passes"
    )
    return int(raw or 0)


def test_without_beat_the_workers_run_the_recovery_pass(user, settings):
    """Beat hung or never deployed: a message lost with the broker is still re-dispatched,
    because a worker runs the overdue pass itself (and only one worker takes each turn)."""
    wf = make_workflow(user, [node("a"), node("b")], [edge("a", "b")])
    with PrivateBroker() as broker:
        broker.worker("wa", **WATCH).start()
        broker.worker("wb", **WATCH).start()
        broker.stop()
        ex_id = execution_create(workflow=wf, input={"k": 2})[0].id  # its message is lost
        broker.start()
        deadline = time.monotonic() + 60
        while Execution.objects.get(id=ex_id).status != "succeeded":
            assert time.monotonic() < deadline, list(
                NodeRun.objects.filter(execution_id=ex_id).values_list("node", "status")
            )
            time.sleep(0.2)
        assert _fallback_passes(broker.url, settings) >= 1
        # Two workers watching, and a pass is due only 2 s after the last one ended: over
        # 6 s at most 4 passes (both workers running each turn would make about twice that).
        before = _fallback_passes(broker.url, settings)
        time.sleep(6)
        passes = _fallback_passes(broker.url, settings) - before
        assert 1 <= passes <= 4, passes
    ex = Execution.objects.get(id=ex_id)
    assert ex.output == {"b": {"k": 2}}
    assert set(ex.node_runs.values_list("attempts", flat=True)) == {1}


def test_workers_leave_the_pass_to_beat_while_beat_runs_it(user, settings):
    wf = make_workflow(user, [node("a")], [])
    with PrivateBroker() as broker:
        client = redis.Redis.from_url(broker.url)
        stamp_key = f"{settings.WECONNECT_KEY_PREFIX}metrics:recovery_last_run"
        client.set(stamp_key, repr(time.time()))
        broker.worker("wc", **WATCH).start()
        broker.stop()
        ex_id = execution_create(workflow=wf, input={})[0].id  # its message is lost
        broker.start()
        client = redis.Redis.from_url(broker.url)
        end = time.monotonic() + 5
        while time.monotonic() < end:  # Beat's passes keep coming (and repair nothing here)
            client.set(stamp_key, repr(time.time()))
            time.sleep(0.2)
        assert _fallback_passes(broker.url, settings) == 0
        assert Execution.objects.get(id=ex_id).status == "pending"
        # Beat falls silent: the worker takes over within the fallback time.
        deadline = time.monotonic() + 30
        while Execution.objects.get(id=ex_id).status != "succeeded":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert _fallback_passes(broker.url, settings) >= 1


def test_a_lost_mark_gives_beat_its_time_before_a_worker_runs_the_pass(settings):
    """Redis restarted (or no pass ran yet): with no mark of the last pass, the watch counts
    from the moment a worker first saw none, so Beat's next pass comes first and the workers
    do not all run one after every Redis restart."""
    from executions.engine import watchdog
    from executions.redis_client import redis_client

    settings.WECONNECT_RECOVERY_FALLBACK_SECONDS = 30
    client = redis_client()
    prefix = settings.WECONNECT_KEY_PREFIX
    client.delete(f"{prefix}metrics:recovery_last_run", f"{prefix}metrics:recovery_watched_since")
    t = time.time()
    assert not watchdog.is_due(now=t)
    assert not watchdog.is_due(now=t + 29)
    assert watchdog.is_due(now=t + 31)
    client.set(f"{prefix}metrics:recovery_last_run", repr(t + 31))  # a pass ran
    assert not watchdog.is_due(now=t + 40)
    assert watchdog.is_due(now=t + 62)
