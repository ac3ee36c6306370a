from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.environment import RUN_ID

ROOT = Path(__file__).resolve().parent.parent


def database_url_for_workers() -> str:
    """The test database, as a URL for worker subprocesses (after pytest-django created it)."""
    db = settings.DATABASES["default"]
    host = db.get("HOST") or "127.0.0.1"
    if host.startswith("/"):
        host = quote(host, safe="")
    elif db.get("PORT"):
        host = f"{host}:{db['PORT']}"
    user = quote(db.get("USER") or "postgres", safe="")
    password = f":{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{host}/{db['NAME']}"


def worker_queues(env: dict) -> dict[str, str]:
    """The queue names a process with this environment uses (as weconnect/settings.py names
    them)."""
    base = env.get("WECONNECT_QUEUE") or "weconnect"
    return {
        "workflow": env.get("WECONNECT_WORKFLOW_QUEUE") or f"{base}-workflow",
        "node": env.get("WECONNECT_NODE_QUEUE") or f"{base}-node",
    }


class WorkerProcess:
    """A real `celery worker` process on this run's queue, against the test database."""

    def __init__(
        self,
        *,
        concurrency: int = 4,
        name: str = "main",
        env: dict | None = None,
        base_env: dict | None = None,
        roles: tuple[str, ...] = ("workflow", "node"),
    ):
        """``env`` is added to this run's environment pointed at the test database;
        ``base_env`` replaces that environment whole (a worker on another database);
        ``roles`` are the queues it consumes (both, as the Procfile's worker does)."""
        self.concurrency = concurrency
        self.roles = roles
        self.hostname = f"wctest-{RUN_ID}-{name}@localhost"
        if base_env is None:
            base_env = {**os.environ, "DATABASE_URL": database_url_for_workers()}
        self.env = {**base_env, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.log = ROOT / "var" / f"test-worker-{RUN_ID}-{name}.log"

    def start(self, wait: bool = True) -> WorkerProcess:
        self.log.parent.mkdir(exist_ok=True)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "weconnect",
                "worker",
                "-P",
                "prefork",
                "-c",
                str(self.concurrency),
                "-n",
                self.hostname,
                "-Q",
                ",".join(worker_queues(self.env)[role] for role in self.roles),
                "--without-mingle",
                "--without-gossip",
                "-l",
                "warning",
                "-O",
                "fair",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        from weconnect.celery import app

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early; see {self.log}")
            try:
                if app.control.ping(destination=[self.hostname], timeout=0.5):
                    return
            except Exception:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready after {timeout}s; see {self.log}")

    def child_pids(self) -> list[int]:
        import psutil

        return [c.pid for c in psutil.Process(self.proc.pid).children()]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL the whole worker (parent and pool children) at once."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def drop_redis_keys(*patterns: str) -> None:
    """Delete the keys of this run (its counters, its queue bindings) from the shared Redis."""
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    for pattern in patterns:
        keys = list(client.scan_iter(match=pattern, count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])


@pytest.fixture(scope="session", autouse=True)
def _clean_run_keys():
    """A test run shares the developer's Redis: leave none of its keys behind."""
    yield
    broker_prefix = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("global_keyprefix")
    patterns = [settings.WECONNECT_KEY_PREFIX + "*"] + (
        [broker_prefix + "*"] if broker_prefix else []
    )
    try:
        drop_redis_keys(*patterns)
    except Exception:
        pass


@pytest.fixture(scope="session")
def worker(django_db_setup, django_db_blocker):
    w = WorkerProcess(concurrency=4).start()
    yield w
    w.stop()


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user(username="alice", password="pw-alice-123")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user(username="bob", password="pw-bob-123")


def client_for(u) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=u)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def api(user) -> APIClient:
    return client_for(user)


@pytest.fixture
def other_api(other_user) -> APIClient:
    return client_for(other_user)


def _quiet_worker_before_flush() -> None:
    """Stop what the worker may still be doing for a finished test before pytest-django
    truncates the tables: cancel active executions and wait (briefly) for running nodes to end.
    A TRUNCATE racing a worker transaction can otherwise be chosen as a deadlock victim."""
    from executions.models import Execution, NodeRun

    Execution.objects.filter(status__in=["pending", "running"]).update(status="cancelled")
    NodeRun.objects.filter(status__in=["pending", "queued", "retrying"]).update(status="cancelled")
    deadline = time.monotonic() + 5
    while NodeRun.objects.filter(status="running").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def _quiet_worker(request):
    yield
    marker = request.node.get_closest_marker("django_db")
    if marker and marker.kwargs.get("transaction") and "worker" in request.fixturenames:
        try:
            _quiet_worker_before_flush()
        except Exception:
            pass


def _flush_with_retry():
    """TRUNCATE can still lose a deadlock to a worker's transaction: try again."""
    from django.core.management.base import CommandError
    from django.test import TransactionTestCase

    original = TransactionTestCase._fixture_teardown

    def teardown(self):
        for attempt in range(5):
            try:
                return original(self)
            except CommandError:
                if attempt == 4:
                    raise
                time.sleep(0.5)

    TransactionTestCase._fixture_teardown = teardown


_flush_with_retry()
