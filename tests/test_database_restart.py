"""PostgreSQL restarted under a running stack: web, workers and Beat carry on without manual
action, and every execution in flight completes.

The stack runs as production does (the Procfile's web, worker and beat) against a PostgreSQL
server of the test's own, which the test crashes (``immediate``: clients cut off mid-statement,
no checkpoint) and restarts cleanly while node runs are claiming and finishing."""

from __future__ import annotations

import os
import threading
import time

import pytest

from tests.environment import RUN_ID
from tests.support.pgcluster import PgCluster
from tests.support.stack import Stack, call, wait_finished

CHAIN = {
    "name": "restart chain",
    "nodes": [
        {"key": "a", "type": "test_behave", "config": {"sleep": 0.2}},
        {"key": "b", "type": "test_behave", "config": {"sleep": 0.2}},
        {"key": "c", "type": "noop"},
    ],
    "connections": [
        {"source": "a", "target": "b"},
        {"source": "b", "target": "c"},
    ],
}

# Fast failure detection for the test: a run whose worker lost its database mid-hop is
# reclaimed after the lease, by a recovery pass Beat sends every second.
FAST = {
    "WECONNECT_LEASE_SECONDS": "3",
    "WECONNECT_HEARTBEAT_SECONDS": "1",
    "WECONNECT_RECOVERY_INTERVAL_SECONDS": "1",
    "WECONNECT_REDISPATCH_AFTER_SECONDS": "2",
    "DATABASE_CONNECT_TIMEOUT": "2",
}


@pytest.fixture
def pg():
    try:
        import pgserver  # noqa: F401
    except ImportError:  # pragma: no cover - a dev dependency
        pytest.skip("the pgserver package (PostgreSQL binaries) is not installed")
    with PgCluster() as cluster:
        yield cluster


def trigger(client, workflow_id: str, i: int) -> str:
    r = call(
        client,
        "POST",
        f"/api/workflows/{workflow_id}/execute/",
        json={"input": {"i": i}},
        headers={"Idempotency-Key": f"restart-{i}"},
    )
    assert r.status_code in (200, 202), r.text
    return r.json()["id"]


def test_stack_survives_postgres_crash_and_restart(pg):
    url = pg.create_database("weconnect")
    with Stack(
        database_url=url, redis_url=os.environ["REDIS_URL"], name=f"pg-{RUN_ID}", **FAST
    ) as stack:
        stack.release()
        for role in ("web", "worker", "beat"):
            stack.start(role)
        stack.wait_web()
        with stack.client() as client:
            r = client.post("/api/workflows/", json=CHAIN)
            assert r.status_code == 201, r.text
            wf = r.json()["id"]
            ids = [trigger(client, wf, i) for i in range(12)]

            # Triggers keep arriving from another client while the database goes away.
            during: list[str] = []

            def keep_triggering() -> None:
                with stack.client(timeout=5) as other:
                    for i in range(100, 112):
                        during.append(trigger(other, wf, i))
                        time.sleep(0.3)

            thread = threading.Thread(target=keep_triggering)
            thread.start()
            time.sleep(0.6)  # node runs are claiming and finishing now
            pg.restart("immediate")
            time.sleep(2)
            pg.restart("fast")
            thread.join(timeout=120)
            assert not thread.is_alive()
            after = [trigger(client, wf, i) for i in range(200, 204)]

            docs = wait_finished(client, ids + during + after, timeout=240)

        statuses = {d["status"] for d in docs.values()}
        assert statuses == {"succeeded"}, {k: d["status"] for k, d in docs.items()}
        for d in docs.values():
            assert d["output"] == {"c": d["input"]}
        # The crash reached work in flight (else this test would prove nothing)...
        assert "OperationalError" in stack.log_path("worker").read_text()
        # ...and nobody had to restart anything by hand.
        for role in ("web", "worker", "beat"):
            assert stack.alive(role), f"{role} exited; see {stack.log_path(role)}"
