"""The raw Celery baseline: a separate Celery app on the same Redis, with its own queue and
key prefix, and the settings the engine uses where they are comparable (JSON, acks_late,
prefetch 1, no task events). Its tasks do nothing but pass their argument on; the last task
of a chain (or the body of a chord) signals completion by pushing to a Redis list that the
benchmark waits on with BLPOP.

Started as a worker with ``celery -A benchmarks.raw worker``; configured from the environment
variables set by :mod:`benchmarks.environment`."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import redis
from celery import Celery

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = os.environ.get("WCBENCH_RAW_QUEUE", "wcbench-raw")
PREFIX = os.environ.get("WCBENCH_RAW_PREFIX", "wcbench-raw:")

# Not the current app: the engine's shared tasks must keep resolving to the engine's app.
app = Celery("wcbench_raw", set_as_current=False)
app.conf.update(
    broker_url=REDIS_URL,
    # A chord needs a result backend; only the chord's header tasks store results.
    result_backend=REDIS_URL,
    result_expires=600,
    task_ignore_result=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_default_queue=QUEUE,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_send_task_events=False,
    task_send_sent_event=False,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    broker_transport_options={"global_keyprefix": PREFIX, "visibility_timeout": 3600},
    result_backend_transport_options={"global_keyprefix": PREFIX},
)


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL)


def done_key(token: str) -> str:
    return f"{PREFIX}done:{token}"


@app.task(name="wcbench.noop", ignore_result=True, acks_late=True)
def noop(payload: Any) -> Any:
    return payload


@app.task(name="wcbench.noop_stored", ignore_result=False, acks_late=True)
def noop_stored(payload: Any) -> Any:
    return payload


@app.task(name="wcbench.done", ignore_result=True, acks_late=True)
def done(payload: Any, token: str) -> Any:
    _redis().rpush(done_key(token), "1")
    return payload


@app.task(name="wcbench.join", ignore_result=True, acks_late=True)
def join(results: list[Any], token: str) -> int:
    _redis().rpush(done_key(token), str(len(results)))
    return len(results)
