from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.conf import settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.support.worker import WorkerProcess, database_url_for_workers  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent

# Fixtures shared by several test modules, registered once instead of imported with `*`.
pytest_plugins = ["tests.support.security", "tests.support.monitoring"]


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
