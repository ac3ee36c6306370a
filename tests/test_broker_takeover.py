"""A whole worker machine dies mid-node, on each broker: how its run is taken over, and how soon.

- RabbitMQ returns a dead consumer's unacknowledged messages at once: the surviving worker gets
  the message marked ``redelivered`` and takes the run over itself, no recovery pass needed.
- Redis keeps them in its unacked hash until the visibility timeout (an hour by default): the
  run is reclaimed by the recovery pass once its lease has expired.

The stack runs as production does (the Procfile's web, worker, beat) on a database of its own.
The measured figures are printed (``-s``) and kept in docs/operations.md.
"""

from __future__ import annotations

import os
import signal
import time

import psycopg
import pytest

from tests.environment import AMQP_URL, RUN_ID, rabbitmq_reachable
from tests.support.stack import Stack, call, wait_finished

LEASE_SECONDS = 10
SLEEP = 8

WORKFLOW = {
    "name": "takeover",
    "nodes": [
        {"key": "a", "type": "test_behave", "config": {"sleep": SLEEP}},
        {"key": "b", "type": "noop"},
    ],
    "connections": [{"source": "a", "target": "b"}],
}


def _database(name: str) -> str:
    from django.conf import settings

    db = settings.DATABASES["default"]
    host = db.get("HOST") or "127.0.0.1"
    admin = f"postgres://{db.get('USER') or 'postgres'}@{host}:{db.get('PORT') or 5432}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin.rsplit("/", 1)[0] + f"/{name}", admin


def _drop(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


BROKERS = ["redis", "amqp"]


@pytest.mark.parametrize("broker", BROKERS)
def test_dead_worker_machine_is_taken_over(broker):
    from tests.environment import _amqp_broker_url

    if broker == "amqp" and not rabbitmq_reachable():
        pytest.skip(f"RabbitMQ is not reachable at {AMQP_URL}")
    broker_url = _amqp_broker_url() if broker == "amqp" else os.environ["REDIS_URL"]
    name = f"wc_takeover_{broker}_{RUN_ID}"
    db_url, admin = _database(name)
    try:
        with Stack(
            database_url=db_url,
            redis_url=os.environ["REDIS_URL"],
            name=f"takeover-{broker}-{RUN_ID}",
            CELERY_BROKER_URL=broker_url,
            WECONNECT_LEASE_SECONDS=str(LEASE_SECONDS),
            WECONNECT_HEARTBEAT_SECONDS="1",
            WECONNECT_RECOVERY_INTERVAL_SECONDS="1",
            WECONNECT_LOG_LEVEL="INFO",
            WORKER_CONCURRENCY="1",
        ) as stack:
            stack.release()
            stack.start("web")
            stack.start("beat")
            stack.start("worker", "w1")
            stack.wait_web()
            with stack.client() as client:
                wf = client.post("/api/workflows/", json=WORKFLOW).json()["id"]
                ex = call(client, "POST", f"/api/workflows/{wf}/execute/", json={"input": {}})
                ex_id = ex.json()["id"]
                deadline = time.monotonic() + 60
                with psycopg.connect(db_url, autocommit=True) as conn:
                    while not conn.execute(
                        "SELECT 1 FROM executions_noderun WHERE node='a' AND status='running'"
                    ).fetchone():
                        assert time.monotonic() < deadline, "w1 never started the node"
                        time.sleep(0.05)
                stack.start("worker", "w2")
                time.sleep(2.5)  # w2 is up and consuming (a sleeps longer)
                stack.kill("w1", signal.SIGKILL)
                killed = time.monotonic()
                [doc] = wait_finished(client, [ex_id], timeout=120).values()
                elapsed = time.monotonic() - killed
            with psycopg.connect(db_url, autocommit=True) as conn:
                runs = dict(
                    (r[0], r[1:])
                    for r in conn.execute(
                        "SELECT node, attempts, reassignments FROM executions_noderun"
                    ).fetchall()
                )
        assert doc["status"] == "succeeded", doc
        assert runs["a"] == (2, 1) and runs["b"] == (1, 0), runs
        w2_log = stack.log_path("w2").read_text()
        beat_and_workers = w2_log + stack.log_path("beat").read_text()
        if broker == "amqp":
            # The message came straight back: w2 took the run over on redelivery.
            assert "took over a run whose worker was lost" in w2_log
        else:
            # Redis held the message: the recovery pass reclaimed the run after the lease.
            assert "reclaimed=1" in beat_and_workers
            assert elapsed >= SLEEP + 1
        print(
            f"\n{broker}: worker killed -> execution finished in {elapsed:.1f}s "
            f"(lease {LEASE_SECONDS}s, node {SLEEP}s)"
        )
    finally:
        _drop(admin, name)
