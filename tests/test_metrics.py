"""GET /monitoring/metrics: the Prometheus exposition (parsed with prometheus_client's own
parser), counters that move when executions run through the real worker, the JSON view and
the token."""

from __future__ import annotations

import math
import time

import pytest
from django.conf import settings
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from executions import counters
from executions.engine.recovery import recovery_run
from executions.models import NodeRun
from executions.services.executions import execution_create
from tests.support.workflows import edge, make_workflow, node, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def scrape(client, **headers) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    headers.setdefault("HTTP_ACCEPT", "text/plain;version=0.0.4")
    response = client.get("/monitoring/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def settled_scrape(client, timeout: float = 15.0):
    """A scrape once the worker processes have sent what they still held from earlier tests
    (each sends its counts once a second): two scrapes 1.5 s apart that agree."""

    def counts(samples):
        return {k: v for k, v in samples.items() if k[0].startswith("weconnect_node_run")}

    deadline = time.monotonic() + timeout
    last = scrape(client)
    while time.monotonic() < deadline:
        time.sleep(1.5)
        now = scrape(client)
        if counts(now) == counts(last):
            return now
        last = now
    return last


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_move_after_executions_run(worker, client, user):
    before = settled_scrape(client)
    wf = make_workflow(
        user,
        [
            node("a"),
            node(
                "flaky",
                "test_behave",
                config={"fail_attempts": 1, "sleep": 0.05},
                retry={"max_retries": 2, "backoff_seconds": 0.01, "jitter": False},
            ),
            node("boom", "test_behave", config={"fail_attempts": 9, "retryable": False}),
        ],
        [edge("a", "flaky"), edge("flaky", "boom")],
    )
    ids = [execution_create(workflow=wf, input={"n": i})[0].id for i in range(2)]
    for i in ids:
        assert wait_for(i).status == "failed"
    # Worker processes send their counts once a second: wait until every finished run is in.
    expected = [
        ("weconnect_node_runs_finished_total", {"node_type": "noop", "status": "succeeded"}, 2),
        ("weconnect_node_runs_finished_total", {"node_type": "test_behave", "status": "failed"}, 2),
        ("weconnect_node_run_retries_total", {"node_type": "test_behave"}, 2),
    ]
    deadline = time.monotonic() + 30
    while True:
        after = scrape(client)
        arrived = all(
            value(after, name, **labels) - value(before, name, **labels) >= n
            for name, labels, n in expected
        )
        if arrived or time.monotonic() > deadline:
            break
        time.sleep(0.2)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("weconnect_node_runs_finished_total", node_type="noop", status="succeeded") == 2
    assert (
        moved("weconnect_node_runs_finished_total", node_type="test_behave", status="succeeded")
        == 2
    )
    assert (
        moved("weconnect_node_runs_finished_total", node_type="test_behave", status="failed") == 2
    )
    assert moved("weconnect_node_run_retries_total", node_type="test_behave") == 2
    # Six finished runs observed; the flaky one slept 50 ms in its finishing attempt.
    assert moved("weconnect_node_run_duration_seconds_count", node_type="test_behave") == 4
    assert moved("weconnect_node_run_duration_seconds_sum", node_type="test_behave") >= 0.1
    assert (
        moved("weconnect_node_run_duration_seconds_bucket", node_type="test_behave", le="+Inf") == 4
    )
    assert (
        moved("weconnect_node_run_duration_seconds_bucket", node_type="test_behave", le="0.05") <= 2
    )
    # Queue wait: first attempts only, so the flaky node's retry is not counted.
    assert moved("weconnect_node_run_queue_wait_seconds_count", node_type="noop") == 2
    assert moved("weconnect_node_run_queue_wait_seconds_count", node_type="test_behave") == 2
    # Gauges from the database.
    assert moved("weconnect_executions", status="failed") == 2
    assert moved("weconnect_node_runs", node_type="test_behave", status="failed") == 2
    assert value(after, "weconnect_executions_in_progress") == 0
    for role, name in (
        ("workflow", settings.WECONNECT_WORKFLOW_QUEUE),
        ("node", settings.WECONNECT_NODE_QUEUE),
    ):
        assert ("weconnect_queue_waiting_messages", (("queue", name), ("role", role))) in after
    for source in ("database", "broker", "redis"):
        assert value(after, "weconnect_metrics_source_up", source=source) == 1


def test_recovery_redispatch_is_counted(worker, client, user):
    before = scrape(client)
    wf = make_workflow(user, [node("a")])
    execution, _ = execution_create(workflow=wf, input={})
    wait_for(execution.id)
    # A queued run whose message was lost: no dispatch recorded, due now.
    run = NodeRun.objects.get(execution=execution)
    from executions.models import Execution

    Execution.objects.filter(id=execution.id).update(status="running", finished_at=None)
    NodeRun.objects.filter(id=run.id).update(
        status="queued", dispatched_at=None, next_attempt_at=None
    )
    report = recovery_run()
    assert report.redispatched == 1
    wait_for(execution.id, statuses={"succeeded", "failed"})
    after = scrape(client)
    assert (
        value(after, "weconnect_recovery_actions_total", action="redispatched")
        - value(before, "weconnect_recovery_actions_total", action="redispatched")
        == 1
    )


def test_exposition_when_redis_is_unreachable(worker, client, closed_port):
    # Counters are read through the engine's Redis client; point it at a closed port.
    from executions import redis_client as clients

    url = f"redis://127.0.0.1:{closed_port}/0"
    clients.redis_client.cache_clear()
    try:
        with override_settings(REDIS_URL=url, CELERY_BROKER_URL=url):
            started = time.monotonic()
            samples = scrape(client)
            took = time.monotonic() - started
            # Recording with Redis down is silently dropped: the engine is never broken by it.
            counters.record_node_run("noop", "succeeded", 0.01, 0.01)
            counters.flush()
    finally:
        clients.redis_client.cache_clear()
    assert value(samples, "weconnect_metrics_source_up", source="redis") == 0
    assert value(samples, "weconnect_metrics_source_up", source="broker") == 0
    assert value(samples, "weconnect_metrics_source_up", source="database") == 1
    assert ("weconnect_executions", (("status", "pending"),)) in samples
    assert not any(name.startswith("weconnect_node_runs_finished") for name, _ in samples)
    assert took < 3


def test_histogram_buckets_are_cumulative():
    import redis as redis_lib

    client = redis_lib.Redis.from_url(settings.REDIS_URL)
    counters.record_node_run("bucket_probe", "succeeded", 0.003, None)
    counters.record_node_run("bucket_probe", "succeeded", 0.2, 0.02)
    counters.record_node_run("bucket_probe", "failed", 1e9, float("nan"))
    # Counts are added up in the process and reach Redis only when flushed.
    assert "bucket_probe" not in counters.read(client).duration
    counters.flush()
    snap = counters.read(client)
    hist = dict(snap.duration["bucket_probe"].buckets)
    assert hist["0.005"] == 1 and hist["0.25"] == 2 and hist["600.0"] == 2 and hist["+Inf"] == 3
    assert snap.duration["bucket_probe"].count == 3
    assert math.isclose(snap.duration["bucket_probe"].sum, 0.203 + 1e9)
    assert snap.wait["bucket_probe"].count == 1
    assert snap.node_runs[("bucket_probe", "succeeded")] == 2


def test_json_view(worker, staff_client, user):
    client = staff_client  # recent failures and active jobs are for staff or the token
    wf = make_workflow(
        user, [node("boom", "test_behave", config={"fail_attempts": 9, "retryable": False})]
    )
    failed = wait_for(execution_create(workflow=wf, input={})[0].id)
    slow = make_workflow(user, [node("slow", "test_behave", config={"sleep": 3})])
    running, _ = execution_create(workflow=slow, input={})
    wait_for(running.id, statuses={"running"})
    deadline = time.monotonic() + 10
    while not NodeRun.objects.filter(execution=running, status="running").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)

    response = client.get("/monitoring/metrics?format=json")
    assert response.status_code == 200
    doc = response.json()
    assert set(doc) >= {
        "generated_at",
        "sources",
        "queues",
        "executions",
        "node_runs",
        "counters",
        "active_jobs",
        "recent_failures",
        "system",
    }
    assert all(s["ok"] for s in doc["sources"].values()), doc["sources"]
    assert set(doc["queues"]) == {"workflow", "node"}
    queue = doc["queues"]["node"]
    assert queue["name"] == settings.WECONNECT_NODE_QUEUE
    assert isinstance(queue["waiting"], int)
    assert queue["running"] == 1 and queue["failed_last_hour"] >= 1
    assert doc["executions"]["by_status"]["running"] == 1
    assert doc["executions"]["in_progress"] == 1
    jobs = doc["active_jobs"]["jobs"]
    assert [(j["execution_id"], j["node"], j["name"]) for j in jobs] == [
        (str(running.id), "slow", "weconnect.run_node")
    ]
    assert jobs[0]["worker"] == worker.hostname
    failure = doc["recent_failures"][0]
    assert failure["execution_id"] == str(failed.id) and failure["node"] == "boom"
    assert failure["error"]["message"] == "planned failure on attempt 1"
    assert len(doc["recent_failures"]) <= 20
    system = doc["system"]
    assert system["cpu_count"] >= 1 and 0 <= system["memory"]["percent"] <= 100
    assert system["disk"]["total"] > 0 and len(system["load_average"]) == 3
    assert any(
        r["node_type"] == "test_behave" and r["status"] == "failed" for r in doc["node_runs"]
    )
    wait_for(running.id)


def test_token_and_bad_format(client):
    with override_settings(WECONNECT_MONITORING_TOKEN="metrics-token"):
        assert client.get("/monitoring/metrics").status_code == 401
        assert client.get("/monitoring/metrics?format=json").status_code == 401
        wrong = client.get("/monitoring/metrics", HTTP_AUTHORIZATION="Bearer wrong")
        assert wrong.status_code == 401 and wrong["WWW-Authenticate"].startswith("Bearer")
        assert (
            client.get("/monitoring/metrics", HTTP_AUTHORIZATION="Bearer metrics-token").status_code
            == 200
        )
        assert client.get("/monitoring/metrics?format=json&token=metrics-token").status_code == 200
        bad = client.get("/monitoring/metrics?format=xml&token=metrics-token")
    assert bad.status_code == 400 and "format" in bad.json()


def test_a_workers_own_recovery_pass_is_counted(client, settings):
    from executions.engine import watchdog
    from executions.redis_client import redis_client

    settings.WECONNECT_RECOVERY_FALLBACK_SECONDS = 30
    before = scrape(client)
    client_ = redis_client()
    stamp = f"{settings.WECONNECT_KEY_PREFIX}metrics:recovery_last_run"
    client_.set(stamp, repr(time.time()))
    assert watchdog.run_if_due() is None  # the last pass is recent: left to Beat
    client_.set(stamp, repr(time.time() - 31))
    client_.delete(f"{settings.WECONNECT_KEY_PREFIX}recovery:fallback")
    assert isinstance(watchdog.run_if_due(), dict)  # overdue: this process ran it
    assert watchdog.run_if_due() is None  # and its own pass is now the last one
    after = scrape(client)
    assert (
        value(after, "weconnect_recovery_actions_total", action="fallback_passes")
        - value(before, "weconnect_recovery_actions_total", action="fallback_passes")
        == 1
    )
