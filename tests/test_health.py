"""GET /monitoring/health against the real database, Redis, broker and a real worker; and
against a closed port and a server that never answers."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from executions.models import Execution
from executions.services.executions import execution_create
from monitoring.health import HealthCheck
from tests.support.workflows import make_workflow, node, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def timed_get(client, url: str, **headers):
    started = time.monotonic()
    response = client.get(url, **headers)
    return response, time.monotonic() - started


def test_everything_up_is_ok(worker, client, beat_ran):
    beat_ran()
    response, took = timed_get(client, "/monitoring/health")
    assert response.status_code == 200, response.content
    doc = response.json()
    assert doc["status"] == "ok", doc
    checks = doc["checks"]
    assert set(checks) == {"database", "redis", "broker", "workers", "beat"}
    assert all(c["ok"] for c in checks.values()), checks
    assert checks["database"]["latency_ms"] >= 0 and checks["redis"]["latency_ms"] >= 0
    assert checks["workers"]["online"] >= 1
    assert worker.hostname in checks["workers"]["workers"]
    assert checks["beat"]["last_sweep"]
    queue = doc["queues"][settings.WECONNECT_QUEUE]
    # Messages left by earlier tests may still be draining; the exact count is checked on a
    # queue of its own below.
    assert isinstance(queue.pop("waiting"), int)
    assert queue == {"active": 0, "failed": 0}
    assert doc["executions"] == {"running": 0, "pending": 0, "stale": 0}
    assert took < 1.5
    assert response["Cache-Control"].startswith("max-age=0")


def test_counts_failures_stale_executions_and_waiting_messages(worker, client, beat_ran, user):
    from executions.models import NodeRun
    from weconnect.celery import app

    beat_ran()
    wf = make_workflow(
        user, [node("boom", "test_behave", config={"fail_attempts": 9, "retryable": False})]
    )
    failed = wait_for(execution_create(workflow=wf, input={})[0].id)
    assert failed.status == "failed"
    ok = wait_for(execution_create(workflow=make_workflow(user, [node("a")]), input={})[0].id)
    # An execution stuck in "running" since two days ago, as a lost one would look.
    two_days_ago = timezone.now() - timedelta(days=2)
    Execution.objects.filter(id=ok.id).update(
        status="running", created_at=two_days_ago, started_at=two_days_ago, finished_at=None
    )
    # A message for a task nobody consumes: it waits in a queue of its own.
    other = f"{settings.WECONNECT_QUEUE}-idle"
    app.send_task("weconnect.nothing", queue=other)
    doc = HealthCheck(queues=[settings.WECONNECT_QUEUE, other]).run()
    assert doc["status"] == "degraded", doc  # a stale execution needs attention
    assert doc["executions"] == {"running": 1, "pending": 0, "stale": 1}
    queue = doc["queues"][settings.WECONNECT_QUEUE]
    assert queue["failed"] == NodeRun.objects.filter(status="failed").count() == 1
    assert doc["queues"][other]["waiting"] == 1


def test_beat_silent_is_degraded(worker, client, beat_ran):
    beat_ran(ago=timedelta(seconds=settings.WECONNECT_BEAT_SILENT_AFTER + 60))
    doc = client.get("/monitoring/health").json()
    assert doc["status"] == "degraded"
    assert doc["checks"]["beat"]["ok"] is False
    assert "last ran more than" in doc["checks"]["beat"]["error"]
    beat_ran(ago=None)
    doc = client.get("/monitoring/health").json()
    assert doc["checks"]["beat"] == {
        "ok": False,
        "last_sweep": None,
        "error": "weconnect-recovery has never run",
        "latency_ms": doc["checks"]["beat"]["latency_ms"],
    }


def test_redis_down_broker_up_is_degraded(worker, beat_ran, closed_port):
    beat_ran()
    started = time.monotonic()
    doc = HealthCheck(redis_url=f"redis://127.0.0.1:{closed_port}/0").run()
    took = time.monotonic() - started
    assert doc["status"] == "degraded", doc
    assert doc["checks"]["redis"]["ok"] is False
    assert "ConnectionError" in doc["checks"]["redis"]["error"]
    assert doc["checks"]["broker"]["ok"] and doc["checks"]["database"]["ok"]
    assert took < 1.5


def test_redis_and_broker_closed_is_down_503(worker, client, beat_ran, closed_port):
    beat_ran()
    url = f"redis://127.0.0.1:{closed_port}/0"
    with override_settings(REDIS_URL=url, CELERY_BROKER_URL=url):
        response, took = timed_get(client, "/monitoring/health")
    assert response.status_code == 503
    doc = response.json()
    assert doc["status"] == "down"
    assert not doc["checks"]["broker"]["ok"] and not doc["checks"]["redis"]["ok"]
    assert doc["checks"]["workers"]["ok"] is False
    assert doc["checks"]["database"]["ok"] is True
    assert doc["queues"][settings.WECONNECT_QUEUE]["waiting"] is None
    assert took < 1.5


def test_hanging_dependency_answers_within_a_second(worker, client, beat_ran, hanging_port):
    beat_ran()
    url = f"redis://127.0.0.1:{hanging_port}/0"
    with override_settings(REDIS_URL=url, CELERY_BROKER_URL=url):
        response, took = timed_get(client, "/monitoring/health")
    assert response.status_code == 503
    doc = response.json()
    assert doc["status"] == "down"
    assert not doc["checks"]["redis"]["ok"] and not doc["checks"]["broker"]["ok"]
    assert doc["checks"]["database"]["ok"] is True
    assert took < 1.2, took


def test_database_unreachable_is_down(worker, beat_ran):
    beat_ran()

    def refused():
        raise ConnectionRefusedError("connection refused")

    doc = HealthCheck(extra={"database": refused}).run()
    assert doc["status"] == "down"
    assert doc["checks"]["database"] == {
        "ok": False,
        "error": "ConnectionRefusedError: connection refused",
        "latency_ms": doc["checks"]["database"]["latency_ms"],
    }


def test_token_protection(worker, client, beat_ran):
    beat_ran()
    with override_settings(WECONNECT_MONITORING_TOKEN="s3cret-token"):
        anonymous = client.get("/monitoring/health")
        wrong = client.get("/monitoring/health", HTTP_AUTHORIZATION="Bearer nope")
        bearer = client.get("/monitoring/health", HTTP_AUTHORIZATION="Bearer s3cret-token")
        query = client.get("/monitoring/health?token=s3cret-token")
    assert anonymous.status_code == 200 and anonymous.json() == {"status": "ok"}
    assert wrong.json() == {"status": "ok"}
    assert bearer.status_code == 200 and set(bearer.json()) == {
        "status",
        "checks",
        "queues",
        "executions",
    }
    assert set(query.json()) == {"status", "checks", "queues", "executions"}


def test_only_get(client):
    assert client.post("/monitoring/health").status_code == 405
    assert client.get("/monitoring/live").json() == {"status": "ok"}


def test_a_probe_stuck_past_the_budget_is_not_started_again():
    import threading

    from monitoring.health import run_concurrently

    release = threading.Event()
    calls: list[int] = []

    def hangs() -> dict:
        calls.append(1)
        release.wait(10)
        return {"ok": True}

    scope = f"stuck-{time.monotonic()}"
    first = run_concurrently({"slow": hangs, "fast": lambda: {"ok": True}}, 0.2, scope=scope)
    assert first["slow"] == {"ok": False, "error": "no answer within 0.2s"}
    assert first["fast"]["ok"] is True
    time.sleep(0.1)  # the first probe has now been blocked for longer than the budget
    second = run_concurrently({"slow": hangs, "fast": lambda: {"ok": True}}, 0.2, scope=scope)
    assert second["slow"]["ok"] is False and "previous probe" in second["slow"]["error"]
    assert len(calls) == 1
    release.set()
    time.sleep(0.05)
    third = run_concurrently({"slow": hangs}, 0.2, scope=scope)
    assert third["slow"]["ok"] is True and len(calls) == 2
