"""`make run` (weconnect.devstack): picking a Redis, the stack's environment, the demo account,
loading examples/, and the SQLite default working with several writing worker processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import redis

from executions.models import Workflow
from tests.conftest import drop_redis_keys
from tests.support.worker import WorkerProcess
from weconnect import devstack

ROOT = Path(__file__).resolve().parent.parent


# --- Picking a Redis -------------------------------------------------------------------------


def closed_port() -> int:
    """A port nothing listens on (bound, read, released)."""
    port = devstack.free_port()
    assert not devstack.port_open("127.0.0.1", port)
    return port


def test_redis_url_from_the_environment_is_used_as_is(tmp_path):
    choice = devstack.redis_resolve(url="redis://cache.internal:6390/3", workdir=tmp_path)
    assert (choice.url, choice.source, choice.process) == (
        "redis://cache.internal:6390/3",
        "REDIS_URL",
        None,
    )
    assert not (tmp_path / "redis.log").exists()


def test_without_a_local_redis_the_bundled_server_is_started_and_stopped(tmp_path):
    port = closed_port()
    choice = devstack.redis_resolve(url=None, workdir=tmp_path / "redis", port=port)
    try:
        assert choice.source == "bundled"
        assert choice.process is not None and choice.process.poll() is None
        assert choice.process.args[0] == devstack.redis_server_binary()
        assert Path(choice.process.args[0]).name == "redis-server"
        assert "--save" in choice.process.args and "--appendonly" in choice.process.args
        client = redis.Redis.from_url(choice.url)
        assert client.ping() is True
        client.set("devstack-probe", "1")
        assert client.get("devstack-probe") == b"1"
        assert (tmp_path / "redis" / "redis.log").exists()
        bundled_port = int(choice.url.rsplit(":", 1)[1].split("/")[0])
        # A Redis now answers on that port: a second resolve uses it instead of starting another.
        again = devstack.redis_resolve(url=None, workdir=tmp_path / "other", port=bundled_port)
        assert (again.source, again.process) == ("local", None)
        assert again.url == f"redis://127.0.0.1:{bundled_port}/0"
    finally:
        choice.stop()
    assert choice.process.poll() is not None
    assert not devstack.port_open("127.0.0.1", bundled_port)


# --- The stack's environment -----------------------------------------------------------------


def test_environment_defaults_for_development(tmp_path):
    env = devstack.stack_environment(
        {"PATH": "/usr/bin"}, var_dir=tmp_path, redis_url="redis://x:1/0"
    )
    assert env["DEBUG"] == "true"
    assert len(env["SECRET_KEY"]) >= 50
    assert (tmp_path / "dev-secret-key").read_text() == env["SECRET_KEY"]
    user, password = env["FLOWER_BASIC_AUTH"].split(":", 1)
    assert user == "demo" and len(password) >= 12
    assert env["REDIS_URL"] == "redis://x:1/0"
    assert env["WEB_BIND"].startswith("127.0.0.1:") and int(env["FLOWER_PORT"]) > 0
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    # The development key is kept, so admin sessions survive a restart.
    again = devstack.stack_environment({"PATH": ""}, var_dir=tmp_path, redis_url="redis://x:1/0")
    assert again["SECRET_KEY"] == env["SECRET_KEY"]
    assert again["FLOWER_BASIC_AUTH"] != env["FLOWER_BASIC_AUTH"]


def test_environment_keeps_what_is_set_and_never_invents_a_production_key(tmp_path):
    base = {
        "DEBUG": "false",
        "FLOWER_BASIC_AUTH": "ops:secret",
        "WEB_BIND": "0.0.0.0:9100",
        "FLOWER_PORT": "9101",
    }
    env = devstack.stack_environment(base, var_dir=tmp_path, redis_url="redis://x:1/0")
    assert "SECRET_KEY" not in env
    assert not (tmp_path / "dev-secret-key").exists()
    assert (env["FLOWER_BASIC_AUTH"], env["WEB_BIND"], env["FLOWER_PORT"]) == (
        "ops:secret",
        "0.0.0.0:9100",
        "9101",
    )
    given = devstack.stack_environment(
        {"SECRET_KEY": "k" * 60}, var_dir=tmp_path, redis_url="redis://x:1/0"
    )
    assert given["SECRET_KEY"] == "k" * 60


def test_a_taken_port_is_replaced_by_a_free_one():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        chosen = devstack.port_or_free(taken)
        assert chosen != taken
    free = closed_port()
    assert devstack.port_or_free(free) == free


# --- Demo account and examples ---------------------------------------------------------------


@pytest.mark.django_db
def test_demo_account_is_a_superuser_with_a_stable_token_and_a_new_password():
    from django.contrib.auth import authenticate

    first = devstack.demo_account_ensure()
    second = devstack.demo_account_ensure()
    assert first.username == "demo" and first.token == second.token
    assert first.password != second.password
    user = authenticate(username="demo", password=second.password)
    assert user is not None and user.is_superuser and user.is_staff
    assert authenticate(username="demo", password=first.password) is None


def write(path: Path, doc) -> None:
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)


@pytest.mark.django_db
def test_examples_load_creates_then_updates_without_duplicating(user, tmp_path, capsys):
    loaded = devstack.examples_load(owner=user, directory=ROOT / "examples")
    assert "Demo" in loaded
    demo = Workflow.objects.get(owner=user, name="Demo")
    assert demo.version == 1 and demo.nodes.count() == 4 and demo.connections.count() == 4
    count = Workflow.objects.filter(owner=user).count()

    # Loading again changes nothing.
    devstack.examples_load(owner=user, directory=ROOT / "examples")
    assert Workflow.objects.filter(owner=user).count() == count
    assert Workflow.objects.get(pk=demo.pk).version == 1
    assert "'Demo' unchanged" in capsys.readouterr().out

    # An edited file updates the same workflow to a new version.
    doc = json.loads((ROOT / "examples" / "demo.json").read_text())
    doc["nodes"].append({"key": "extra", "type": "noop"})
    doc["connections"].append({"source": "join", "target": "extra"})
    write(tmp_path / "demo.json", doc)
    devstack.examples_load(owner=user, directory=tmp_path)
    demo.refresh_from_db()
    assert demo.version == 2 and demo.nodes.count() == 5
    assert Workflow.objects.filter(owner=user, name="Demo").count() == 1


@pytest.mark.django_db
def test_examples_with_unknown_types_or_errors_are_skipped_with_a_warning(user, tmp_path, capsys):
    write(
        tmp_path / "a-later.json",
        {"name": "Later", "nodes": [{"key": "a", "type": "not_yet_a_type"}]},
    )
    write(tmp_path / "b-broken.json", "{not json")
    write(
        tmp_path / "c-cycle.json",
        {
            "name": "Cycle",
            "nodes": [{"key": "a", "type": "noop"}, {"key": "b", "type": "noop"}],
            "connections": [{"source": "a", "target": "b"}, {"source": "b", "target": "a"}],
        },
    )
    write(tmp_path / "d-good.json", {"name": "Good", "nodes": [{"key": "a", "type": "noop"}]})
    loaded = devstack.examples_load(owner=user, directory=tmp_path)
    out = capsys.readouterr().out
    assert list(loaded) == ["Good"]
    assert "skipped a-later.json: node types not available yet: not_yet_a_type" in out
    assert "skipped b-broken.json: not readable JSON" in out
    assert "skipped c-cycle.json" in out and "cycle: a -> b -> a" in out
    assert list(Workflow.objects.filter(owner=user).values_list("name", flat=True)) == ["Good"]


def test_order_sync_example_is_the_documented_workflow():
    doc = json.loads((ROOT / "examples" / "order-sync.json").read_text())
    assert doc["name"] == "Order sync"
    assert [n["key"] for n in doc["nodes"]] == ["start", "fetch", "on_failure"]
    assert doc["nodes"][1]["config"] == {"method": "GET", "url": "http://127.0.0.1:9000/orders"}
    assert doc["connections"][1] == {"source": "fetch", "target": "on_failure", "type": "error"}


# --- SQLite with several writing processes ---------------------------------------------------

SQLITE_SCRIPT = textwrap.dedent(
    """
    import json, time
    import django
    django.setup()
    from django.contrib.auth import get_user_model
    from executions.api.serializers import WorkflowInputSerializer
    from executions.models import Execution
    from executions.services.executions import execution_create
    from executions.services.workflows import workflow_create

    owner = get_user_model().objects.create_user(username="sqlite-owner")
    branches = [f"b{i}" for i in range(8)]
    doc = {
        "name": "fan out",
        "nodes": [{"key": "start", "type": "noop"}, {"key": "join", "type": "noop"}]
        + [{"key": k, "type": "noop"} for k in branches],
        "connections": [{"source": "start", "target": k} for k in branches]
        + [{"source": k, "target": "join"} for k in branches],
    }
    s = WorkflowInputSerializer(data=doc)
    s.is_valid(raise_exception=True)
    workflow = workflow_create(owner=owner, data=s.validated_data)
    ids = [execution_create(workflow=workflow, input={"n": i})[0].id for i in range(4)]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        rows = list(Execution.objects.filter(id__in=ids).values_list("status", flat=True))
        if all(r in ("succeeded", "failed", "cancelled", "timed_out") for r in rows):
            break
        time.sleep(0.1)
    done = Execution.objects.filter(id__in=ids)
    print(json.dumps({
        "statuses": sorted(e.status for e in done),
        "joins": [sorted(e.output["join"]) for e in done if e.output],
        "journal": __import__("django.db", fromlist=["connection"]).connection.cursor()
            .execute("PRAGMA journal_mode").fetchone()[0],
    }))
    """
)


def test_sqlite_default_runs_executions_with_a_multi_process_worker(tmp_path):
    """Without DATABASE_URL the stack uses var/weconnect.sqlite3 (WAL, IMMEDIATE transactions):
    a prefork worker with 4 processes and this process all write to it at once."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    run = uuid.uuid4().hex[:8]
    env.update(
        WECONNECT_VAR_DIR=str(tmp_path),
        WECONNECT_QUEUE=f"wcsqlite-{run}",
        WECONNECT_BROKER_KEY_PREFIX=f"wcsqlite-{run}:",
        WECONNECT_KEY_PREFIX=f"wcsqlite:{run}:",
    )
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=120,
    )
    assert (tmp_path / "weconnect.sqlite3").exists()
    # Its own queue and broker prefix: this process's control channel cannot ping it, and the
    # script below waits for the executions anyway.
    worker = WorkerProcess(concurrency=4, name=f"sqlite-{run}", base_env=env).start(wait=False)
    try:
        result = subprocess.run(
            [sys.executable, "-c", SQLITE_SCRIPT],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=150,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        report = json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        worker.stop()
        drop_redis_keys(f"wcsqlite-{run}:*", f"wcsqlite:{run}:*")
    assert report["journal"] == "wal"
    assert report["statuses"] == ["succeeded"] * 4, worker.log.read_text()[-3000:]
    assert report["joins"] == [[f"b{i}" for i in range(8)]] * 4
