"""Execution-finished notifications over Redis pub/sub.

When an execution reaches a terminal state, the transaction that wrote it publishes the
execution id on one channel after commit. Each web process that has someone waiting (a
synchronous webhook) keeps one subscriber connection and one listener thread, fanning the
messages out to the waiting requests' events; a waiter never holds a connection of its own.

Redis is transport here too: a lost message (Redis restarted, the listener reconnecting)
only delays the answer until the waiter's next look at the database (its short poll).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from django.conf import settings

from executions.redis_client import key

log = logging.getLogger("weconnect.engine")

_client: tuple[int, redis.Redis] | None = None


def channel() -> str:
    return key("execution-finished")


def _publisher() -> redis.Redis:
    # One client (and connection pool) per process: a PUBLISH per finished execution must
    # not open a connection each time. Keyed by pid: a forked child makes its own.
    global _client
    if _client is None or _client[0] != os.getpid():
        _client = (
            os.getpid(),
            redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=2),
        )
    return _client[1]


def publish_finished(execution_id) -> None:
    """Tell waiters that ``execution_id`` has finished. Call after the commit."""
    try:
        _publisher().publish(channel(), str(execution_id))
    except Exception as exc:  # waiters fall back to their poll
        log.warning(
            "finish notification not sent",
            extra={"execution_id": str(execution_id), "error": repr(exc)},
        )


class _Listener:
    """The process's subscriber: one thread reading the channel and setting the events of
    the requests waiting for the execution named in each message."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.waiters: dict[str, set[threading.Event]] = {}
        self.subscribed = threading.Event()
        self.thread = threading.Thread(target=self._run, name="weconnect-finished", daemon=True)
        self.thread.start()

    def add(self, execution_id: str, event: threading.Event) -> None:
        with self.lock:
            self.waiters.setdefault(execution_id, set()).add(event)

    def remove(self, execution_id: str, event: threading.Event) -> None:
        with self.lock:
            events = self.waiters.get(execution_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self.waiters[execution_id]

    def _wake(self, execution_id: str) -> None:
        with self.lock:
            events = list(self.waiters.get(execution_id, ()))
        for event in events:
            event.set()

    def _wake_all(self) -> None:
        # After a reconnect messages may have been missed: every waiter looks again.
        with self.lock:
            events = [e for es in self.waiters.values() for e in es]
        for event in events:
            event.set()

    def _run(self) -> None:
        while True:
            pubsub = None
            try:
                client = redis.Redis.from_url(
                    settings.REDIS_URL, socket_connect_timeout=2, health_check_interval=30
                )
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(channel())
                self.subscribed.set()
                self._wake_all()
                while True:
                    message = pubsub.get_message(timeout=5.0)
                    if message and message.get("type") == "message":
                        data = message["data"]
                        self._wake(data.decode() if isinstance(data, bytes) else str(data))
            except Exception as exc:
                self.subscribed.clear()
                log.warning("finish listener reconnecting", extra={"error": repr(exc)})
                time.sleep(1.0)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass


_listener: _Listener | None = None
_listener_lock = threading.Lock()


def _get_listener() -> _Listener:
    global _listener
    with _listener_lock:
        if _listener is None or _listener.pid != os.getpid():
            _listener = _Listener()
        listener = _listener
    # The first waiter of a process gives the subscription a moment, so that a finish
    # published right after it registers is not missed (the poll would still catch it).
    listener.subscribed.wait(timeout=1.0)
    return listener


@contextmanager
def finished_event(execution_id) -> Iterator[threading.Event]:
    """An event set when ``execution_id`` may have finished (check the database then)."""
    listener = _get_listener()
    event = threading.Event()
    listener.add(str(execution_id), event)
    try:
        yield event
    finally:
        listener.remove(str(execution_id), event)
