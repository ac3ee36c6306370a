"""Two worker hosts and a network partition.

Each worker host is a network namespace of its own with one veth link to this machine, where
PostgreSQL, Redis, web and two Beat processes (one too many, by mistake) run; the workers reach
the database and the broker only over their links. The test cuts one host off while it runs
nodes, checks the other host takes its runs over after the lease, brings the link back and
checks that the cut-off worker's late results are refused (fenced by attempt), and that the
second Beat made nothing run twice (recovery passes and schedule slots stay idempotent).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.environment import RUN_ID
from tests.support import netns
from tests.support.pgcluster import PgCluster
from tests.support.stack import Stack, call, wait_finished
from weconnect.devstack import free_port, port_open, redis_server_binary

LEASE = {
    "WECONNECT_LEASE_SECONDS": "3",
    "WECONNECT_HEARTBEAT_SECONDS": "1",
    "WECONNECT_RECOVERY_INTERVAL_SECONDS": "1",
    "WECONNECT_REDISPATCH_AFTER_SECONDS": "2",
    "DATABASE_CONNECT_TIMEOUT": "2",
    "WECONNECT_LOG_LEVEL": "INFO",
}

SLOW = {
    "name": "partition",
    "nodes": [
        {"key": "a", "type": "test_behave", "config": {"sleep": 4}},
        {"key": "b", "type": "noop"},
    ],
    "connections": [{"source": "a", "target": "b"}],
}

EVERY_MINUTE = {
    "name": "every minute",
    "nodes": [{"key": "tick", "type": "noop"}],
    "connections": [],
    "schedule": {"cron": "* * * * *", "timezone": "UTC"},
}


@pytest.fixture
def hosts():
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(reason)
    netns.guard()
    made = [
        netns.Host(f"wc{RUN_ID[:6]}h{i}", subnet).create()
        for i, subnet in enumerate(netns.subnets(2), start=1)
    ]
    yield made
    for host in made:
        host.delete()
    netns.unguard()


def redis_on(addresses: list[str], port: int, workdir) -> object:
    import subprocess

    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            *addresses,
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while not port_open(addresses[0], port, timeout=0.2):
        assert time.monotonic() < deadline and proc.poll() is None, "redis did not start"
        time.sleep(0.05)
    return proc


def rows(db_url: str, sql: str, *args) -> list[tuple]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


def test_partitioned_host_is_taken_over_and_fenced(hosts, tmp_path):
    h1, h2 = hosts
    gateways = [h1.gateway, h2.gateway]
    with PgCluster(host=h1.gateway, extra_hosts=(h2.gateway,)) as pg:
        redis_port = free_port()
        redis_proc = redis_on(gateways, redis_port, tmp_path / "redis")
        try:
            _scenario(pg, h1, h2, redis_port)
        finally:
            redis_proc.kill()
            redis_proc.wait()


def _scenario(pg: PgCluster, h1: netns.Host, h2: netns.Host, redis_port: int) -> None:
    db_url = pg.create_database("weconnect")

    def urls(gateway: str) -> dict[str, str]:
        return {
            "DATABASE_URL": db_url.replace(pg.host, gateway),
            "REDIS_URL": f"redis://{gateway}:{redis_port}/0",
            "CELERY_BROKER_URL": f"redis://{gateway}:{redis_port}/0",
        }

    with Stack(
        database_url=db_url,
        redis_url=f"redis://{h1.gateway}:{redis_port}/0",
        name=f"part-{RUN_ID}",
        **LEASE,
    ) as stack:
        stack.release()
        stack.start("web")
        stack.start("beat", "beat1")
        stack.start("beat", "beat2")  # the mistake: two schedulers
        stack.start("worker", "h1", netns=h1.name, **urls(h1.gateway))
        stack.wait_web()
        with stack.client() as client:
            wf = client.post("/api/workflows/", json=SLOW)
            assert wf.status_code == 201, wf.text
            ticking = client.post("/api/workflows/", json=EVERY_MINUTE)
            assert ticking.status_code == 201, ticking.text
            scheduled_from = datetime.now(UTC)
            ids = [
                call(
                    client,
                    "POST",
                    f"/api/workflows/{wf.json()['id']}/execute/",
                    json={"input": {"i": i}},
                ).json()["id"]
                for i in range(2)
            ]
            # Host 1 claims both (two pool processes) and is cut off while they sleep.
            deadline = time.monotonic() + 60
            while (
                rows(
                    db_url,
                    "SELECT count(*) FROM executions_noderun "
                    "WHERE node = 'a' AND status = 'running'",
                )[0][0]
                < 2
            ):
                assert time.monotonic() < deadline, "host 1 never started the nodes"
                time.sleep(0.1)
            h1.cut()
            cut_at = time.monotonic()
            stack.start("worker", "h2", netns=h2.name, **urls(h2.gateway))

            docs = wait_finished(client, ids, timeout=120)
            taken_over_in = time.monotonic() - cut_at
            assert {d["status"] for d in docs.values()} == {"succeeded"}, docs
            before = rows(
                db_url,
                "SELECT execution_id, node, status, attempts, reassignments, output "
                "FROM executions_noderun ORDER BY execution_id, node",
            )
            by_node = {(str(r[0]), r[1]): r for r in before}
            for ex_id in ids:
                a, b = by_node[(ex_id, "a")], by_node[(ex_id, "b")]
                # Taken over once (two Beats reclaimed it, once), and b ran once.
                assert (a[3], a[4]) == (2, 1), a
                assert b[3] == 1, b

            # The link comes back: host 1's sleeping nodes finish and try to record their
            # results for attempt 1, which is no longer theirs.
            h1.restore()
            log = stack.log_path("h1")
            deadline = time.monotonic() + 60
            while log.read_text().count("node discarded") < 2:
                assert time.monotonic() < deadline, "host 1's late results never arrived"
                time.sleep(0.2)
            time.sleep(1)
            after = rows(
                db_url,
                "SELECT execution_id, node, status, attempts, reassignments, output "
                "FROM executions_noderun ORDER BY execution_id, node",
            )
            assert after == before, "a late result was recorded"
            assert (
                rows(
                    db_url,
                    "SELECT count(*) FROM executions_execution WHERE workflow_id = %s",
                    wf.json()["id"],
                )[0][0]
                == 2
            )

            # Two Beats, one run per schedule slot: wait for the next minute's slot to pass.
            first_slot = scheduled_from.replace(second=0, microsecond=0) + timedelta(minutes=1)
            wait = (first_slot - datetime.now(UTC)).total_seconds() + 8
            if wait > 0:
                time.sleep(wait)
            slots = int((datetime.now(UTC) - first_slot).total_seconds() // 60) + 1
            ticks = rows(
                db_url,
                "SELECT idempotency_key FROM executions_execution WHERE workflow_id = %s",
                ticking.json()["id"],
            )
            assert len(ticks) == slots, ticks
        for key in ("beat1", "beat2", "h1", "h2", "web"):
            assert stack.alive(key), f"{key} exited; see {stack.log_path(key)}"
    print(f"taken over and finished {taken_over_in:.1f}s after the cut")
