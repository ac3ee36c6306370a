"""The stack behind PgBouncer in transaction mode (where a server connection is shared between
clients transaction by transaction: no session state survives a commit). Runs when pgbouncer is
installed; see docs/operations.md for the settings it needs."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from tests.environment import RUN_ID
from tests.support.stack import Stack, call, wait_finished
from weconnect.devstack import free_port, port_open

SHAPES = {
    "name": "bouncer",
    "nodes": [
        {"key": "start", "type": "noop"},
        *[{"key": f"b{i}", "type": "test_behave", "config": {"sleep": 0.05}} for i in range(5)],
        {"key": "join", "type": "merge", "config": {"mode": "object"}},
        {
            "key": "flaky",
            "type": "test_behave",
            "config": {"fail_attempts": 1},
            "retry": {"max_retries": 2, "backoff_seconds": 0.2},
        },
        {"key": "pause", "type": "delay", "config": {"seconds": 1}},
    ],
    "connections": [
        *[{"source": "start", "target": f"b{i}"} for i in range(5)],
        *[{"source": f"b{i}", "target": "join"} for i in range(5)],
        {"source": "join", "target": "flaky"},
        {"source": "flaky", "target": "pause"},
    ],
}


def _admin_url() -> tuple[str, str, int]:
    from django.conf import settings

    db = settings.DATABASES["default"]
    return (
        (db.get("HOST") or "127.0.0.1"),
        (db.get("USER") or "postgres"),
        int(db.get("PORT") or 5432),
    )


@pytest.fixture
def bouncer():
    binary = shutil.which("pgbouncer")
    if not binary:
        pytest.skip("pgbouncer is not installed (Debian package pgbouncer)")
    host, user, port = _admin_url()
    name = f"wc_bouncer_{RUN_ID}"
    admin = f"postgres://{user}@{host}:{port}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    workdir = Path(tempfile.mkdtemp(prefix="wc-pgbouncer-"))
    workdir.chmod(0o777)
    listen = free_port()
    (workdir / "pgbouncer.ini").write_text(
        f"[databases]\n{name} = host={host} port={port} dbname={name} user={user}\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {listen}\n"
        "auth_type = trust\n"
        f"auth_file = {workdir}/users.txt\n"
        "pool_mode = transaction\ndefault_pool_size = 20\nmax_client_conn = 500\n"
        f"unix_socket_dir =\nlogfile = {workdir}/pgbouncer.log\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
    )
    (workdir / "users.txt").write_text(f'"{user}" ""\n')
    # PgBouncer refuses to run as root.
    run_as = ["-u", "postgres"] if os.geteuid() == 0 else []
    proc = subprocess.Popen(
        [binary, *run_as, str(workdir / "pgbouncer.ini")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while not port_open("127.0.0.1", listen):
        assert proc.poll() is None and time.monotonic() < deadline, (
            workdir / "pgbouncer.log"
        ).read_text()
        time.sleep(0.05)
    yield f"postgres://{user}@127.0.0.1:{listen}/{name}", f"postgres://{user}@{host}:{port}/{name}"
    proc.terminate()
    proc.wait()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    shutil.rmtree(workdir, ignore_errors=True)


def test_engine_behind_pgbouncer_in_transaction_mode(bouncer):
    pooled, direct = bouncer
    with Stack(
        database_url=pooled,
        redis_url=os.environ["REDIS_URL"],
        name=f"bouncer-{RUN_ID}",
        DATABASE_POOLER="transaction",
        WECONNECT_RECOVERY_INTERVAL_SECONDS="1",
    ) as stack:
        # Migrations take session-level locks: the release step talks to PostgreSQL directly,
        # as docs/operations.md says to.
        stack.env["DATABASE_URL"] = direct
        stack.release()
        stack.env["DATABASE_URL"] = pooled
        for role in ("web", "worker", "beat"):
            stack.start(role)
        stack.wait_web()
        with stack.client() as client:
            r = client.post("/api/workflows/", json=SHAPES)
            assert r.status_code == 201, r.text
            wf = r.json()["id"]
            ids = [
                call(
                    client, "POST", f"/api/workflows/{wf}/execute/", json={"input": {"i": i}}
                ).json()["id"]
                for i in range(10)
            ]
            docs = wait_finished(client, ids, timeout=180)
            health = client.get("/monitoring/health")
        assert {d["status"] for d in docs.values()} == {"succeeded"}, docs
        for d in docs.values():
            runs = {r["node"]: r for r in d["node_runs"]}
            assert runs["join"]["attempts"] == 1
            assert runs["flaky"]["attempts"] == 2
        assert health.status_code == 200, health.text
        for role in ("web", "worker", "beat"):
            assert stack.alive(role), f"{role} exited; see {stack.log_path(role)}"
