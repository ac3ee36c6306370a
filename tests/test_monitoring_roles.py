"""Health and metrics as the engine's former users read them: queues by role, housekeeping that
never waits behind node runs, recovery's own record of its last run, workers still booting,
content negotiation on /monitoring/metrics and every process's resource use."""

from __future__ import annotations

import json
import os
import time
import uuid

import pytest
import redis
from django.conf import settings
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from executions import counters
from executions.tasks import recovery, run_node
from monitoring import processes
from monitoring.health import HealthCheck, queue_depths
from tests.support.worker import WorkerProcess
from weconnect.celery import app

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def poll(condition, timeout: float = 60, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not true within {timeout}s")


def test_node_runs_are_routed_to_the_node_queue_everything_else_to_the_workflow_queue():
    route = app.amqp.router.route
    assert route({}, "weconnect.run_node")["queue"].name == settings.WECONNECT_NODE_QUEUE
    for task in (
        "weconnect.recovery",
        "weconnect.check_deadline",
        "weconnect.stale_sweep",
        "weconnect.retention",
        "weconnect.run_scheduled",
    ):
        assert route({}, task)["queue"].name == settings.WECONNECT_WORKFLOW_QUEUE, task
    assert settings.WECONNECT_NODE_QUEUE != settings.WECONNECT_WORKFLOW_QUEUE


def test_housekeeping_runs_promptly_behind_2000_queued_node_runs(worker):
    """A worker consuming only the workflow queue (as documented for a housekeeping worker)
    runs recovery at once while 2,000 node-run messages wait on the node queue."""
    base = f"{settings.WECONNECT_QUEUE}-backlog"
    queues = {"workflow": f"{base}-workflow", "node": f"{base}-node"}
    housekeeping = WorkerProcess(
        concurrency=1, name="housekeeping", env={"WECONNECT_QUEUE": base}, roles=("workflow",)
    ).start()
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    prefix = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("global_keyprefix", "")
    try:
        with app.producer_or_acquire() as producer:
            for _ in range(2000):
                run_node.apply_async(
                    args=[str(uuid.uuid4()), "n"], queue=queues["node"], producer=producer
                )
        assert queue_depths(client, [queues["node"]], prefix)[queues["node"]] == 2000
        before = counters.recovery_last_run() or 0.0
        sent = time.time()
        recovery.apply_async(queue=queues["workflow"])
        ran = poll(lambda: (counters.recovery_last_run() or 0.0) > before, timeout=30)
        assert ran
        took = counters.recovery_last_run() - sent
        doc = HealthCheck(queues=queues).run()
        assert doc["queues"]["node"]["waiting"] == 2000
        assert doc["queues"]["workflow"]["waiting"] == 0
        # Generous: a loaded machine; the point is that it did not wait for 2,000 node runs.
        assert took < 20, took
    finally:
        housekeeping.stop()
        client.delete(*(prefix + q for q in queues.values()))


def test_health_is_ok_after_the_first_recovery_pass_without_beats_record(worker, beat_ran):
    # A fresh start: Beat has not written last_run_at back yet (it does every few minutes).
    beat_ran(ago=None)
    counters._client().delete(counters._key("recovery_last_run"))
    doc = HealthCheck().run()
    assert doc["checks"]["beat"]["ok"] is False and doc["status"] == "degraded"
    recovery.delay()  # what Beat sends first after it starts
    poll(lambda: counters.recovery_last_run() is not None, timeout=30)
    doc = HealthCheck().run()
    beat = doc["checks"]["beat"]
    assert beat["ok"] is True and beat["recorded_by"] == "recovery", beat
    assert beat["recovery_last_run"] and "last_sweep" not in beat
    assert doc["status"] == "ok", doc


def test_a_booting_worker_is_reported_as_starting(worker, closed_port):
    # Its broker is unreachable, so it stays where every worker is for its first seconds:
    # booted, connecting, not answering the ping yet.
    booting = WorkerProcess(
        concurrency=1,
        name=f"booting-{uuid.uuid4().hex[:6]}",
        env={"CELERY_BROKER_URL": f"redis://127.0.0.1:{closed_port}/0"},
    ).start(wait=False)
    try:
        poll(
            lambda: booting.hostname in processes.starting_workers(processes.read()),
            timeout=60,
        )
        workers = HealthCheck().run()["checks"]["workers"]
        assert booting.hostname in workers["starting_workers"]
        assert booting.hostname not in workers["workers"]
        assert workers["starting"] >= 1 and workers["ok"] is True
    finally:
        booting.stop()
        client = counters._client()
        stale = [f for f in client.hkeys(processes._key()) if booting.hostname.encode() in f]
        if stale:
            client.hdel(processes._key(), *stale)


# --- /monitoring/metrics content negotiation ---------------------------------------------

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


@pytest.mark.parametrize(
    "accept,kind",
    [
        (PROMETHEUS_ACCEPT, "openmetrics"),
        ("text/plain;version=0.0.4;q=0.5,*/*;q=0.1", "prometheus"),
        ("text/plain", "prometheus"),
        ("*/*", "json"),
        (None, "json"),
        ("application/json", "json"),
        ("application/json, text/plain, */*", "json"),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "json"),
    ],
)
def test_metrics_answer_by_accept(client, accept, kind):
    headers = {"HTTP_ACCEPT": accept} if accept else {}
    response = client.get("/monitoring/metrics", **headers)
    assert response.status_code == 200
    assert "Accept" in response["Vary"]
    body = response.content.decode()
    if kind == "json":
        assert response["Content-Type"] == "application/json"
        assert "queues" in json.loads(body)
    elif kind == "openmetrics":
        assert response["Content-Type"].startswith("application/openmetrics-text")
        names = {f.name for f in openmetrics_families(body)}
        assert "weconnect_executions" in names
    else:
        assert response["Content-Type"].startswith("text/plain; version=")
        names = {f.name for f in text_string_to_metric_families(body)}
        assert "weconnect_executions" in names


def test_format_parameter_still_forces_either(client):
    as_json = client.get("/monitoring/metrics?format=json", HTTP_ACCEPT=PROMETHEUS_ACCEPT)
    assert as_json["Content-Type"] == "application/json"
    as_text = client.get("/monitoring/metrics?format=prometheus", HTTP_ACCEPT="*/*")
    assert as_text["Content-Type"].startswith("text/plain")
    bad = client.get("/monitoring/metrics?format=xml")
    assert bad.status_code == 400 and "format" in bad.json()


def test_process_metrics_of_web_and_worker_processes_in_both_forms(worker, client):
    children = set(worker.child_pids())
    # Pool processes report when they start and every few seconds after.
    poll(
        lambda: (
            children
            <= {
                e["pid"]
                for e in processes.read()
                if e["role"] == "worker" and e["state"] == "ready"
            }
        ),
        timeout=30,
    )
    body = client.get("/monitoring/metrics", HTTP_ACCEPT="text/plain").content.decode()
    samples = [s for f in text_string_to_metric_families(body) for s in f.samples]
    rss = {
        (s.labels["role"], int(s.labels["pid"])): s.value
        for s in samples
        if s.name == "weconnect_process_resident_memory_bytes"
    }
    assert all(rss[("worker", pid)] > 10_000_000 for pid in children), rss
    assert rss[("web", os.getpid())] > 10_000_000
    names = {s.name for s in samples}
    assert {
        "weconnect_process_cpu_seconds_total",
        "weconnect_process_open_fds",
        "weconnect_process_start_time_seconds",
        "process_resident_memory_bytes",  # the scraped process, by prometheus_client
    } <= names
    # Worker names stay private: the public instance label is a digest.
    assert all(worker.hostname not in s.labels.get("instance", "") for s in samples)

    doc = client.get("/monitoring/metrics", HTTP_ACCEPT="application/json").json()
    by_pid = {p["pid"]: p for p in doc["processes"]}
    for pid in children | {os.getpid()}:
        entry = by_pid[pid]
        assert entry["resident_memory_bytes"] > 10_000_000 and entry["cpu_seconds"] >= 0
        assert entry["open_files"] > 0 and entry["start_time_seconds"] > 1_600_000_000
        assert "host" not in entry and worker.hostname not in json.dumps(entry)
