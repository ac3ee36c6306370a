"""Where the benchmark runs: the same PostgreSQL and Redis resolution as the tests
(DATABASE_URL / REDIS_URL, else the local defaults), but a database, queues and key prefixes
of its own, so that it never touches anybody else's data.

Must run before Django reads the settings: it only sets environment variables, which the
worker and web-server processes the benchmark starts inherit."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import psycopg


@dataclass(frozen=True)
class BenchEnvironment:
    run_id: str
    database_url: str  # the benchmark's own database
    admin_url: str  # the server's maintenance database, to create and drop it
    database_name: str
    redis_url: str
    queue: str
    raw_queue: str
    key_prefix: str  # WECONNECT_KEY_PREFIX: every key the engine itself writes
    broker_prefix: str  # the engine's broker keys (queue lists, unacked hash)
    raw_prefix: str  # the raw Celery app's broker and result keys


def resolve() -> BenchEnvironment:
    run_id = secrets.token_hex(4)
    base = os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/weconnect"
    parts = urlsplit(base)
    if not parts.scheme.startswith("postgres"):
        raise SystemExit(
            f"DATABASE_URL must be a PostgreSQL URL for the benchmark, not {parts.scheme!r}"
        )
    name = f"weconnect_bench_{run_id}"
    return BenchEnvironment(
        run_id=run_id,
        database_url=urlunsplit(parts._replace(path=f"/{name}")),
        admin_url=urlunsplit(parts._replace(scheme="postgresql", path="/postgres")),
        database_name=name,
        redis_url=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
        queue=f"wcbench-{run_id}",
        raw_queue=f"wcbench-raw-{run_id}",
        key_prefix=f"wcbench:{run_id}:",
        broker_prefix=f"wcbench-{run_id}:",
        raw_prefix=f"wcbench-raw-{run_id}:",
    )


def export(env: BenchEnvironment) -> None:
    """Point this process (and every process it starts) at the benchmark's resources."""
    os.environ["DATABASE_URL"] = env.database_url
    os.environ["REDIS_URL"] = env.redis_url
    os.environ["WECONNECT_QUEUE"] = env.queue
    # The workflow and node queues are named after WECONNECT_QUEUE.
    os.environ.pop("WECONNECT_WORKFLOW_QUEUE", None)
    os.environ.pop("WECONNECT_NODE_QUEUE", None)
    os.environ["WECONNECT_KEY_PREFIX"] = env.key_prefix
    os.environ["WECONNECT_BROKER_KEY_PREFIX"] = env.broker_prefix
    os.environ["WCBENCH_RAW_QUEUE"] = env.raw_queue
    os.environ["WCBENCH_RAW_PREFIX"] = env.raw_prefix
    os.environ["SECRET_KEY"] = f"bench-only-{secrets.token_hex(16)}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "weconnect.settings")
    # Production-like: DEBUG would record every query in memory (a leak by design), and task
    # events are off in both apps so that neither pays for them.
    os.environ["DEBUG"] = "false"
    os.environ["ALLOWED_HOSTS"] = "127.0.0.1,localhost"
    os.environ["WECONNECT_TASK_EVENTS"] = "false"
    os.environ["WECONNECT_LOG_LEVEL"] = "WARNING"
    os.environ.pop("WECONNECT_NODE_MODULES", None)


def create_database(env: BenchEnvironment) -> None:
    with psycopg.connect(env.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{env.database_name}"')


def drop_database(env: BenchEnvironment) -> None:
    with psycopg.connect(env.admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{env.database_name}" WITH (FORCE)')
