"""Leases for running node runs.

Each worker process keeps one slot: the node run it is executing now. A daemon thread
extends that run's lease every WECONNECT_HEARTBEAT_SECONDS. When the process dies the
heartbeats stop, the lease runs out, and the recovery task hands the run to another worker.

The same thread sends the process's metric counts to Redis once a second (``counters.flush``),
so node runs do not wait on a Redis round trip; what is left is sent when the process exits.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from datetime import timedelta

from celery.signals import worker_process_shutdown
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from executions import counters, store

log = logging.getLogger("weconnect.engine")

_lock = threading.Lock()
_current: tuple[int, int] | None = None
_thread: threading.Thread | None = None

# At most this many seconds of metric counts are lost when a process is killed.
FLUSH_SECONDS = 1.0


def begin(node_run_id: int, attempt: int) -> None:
    global _current
    with _lock:
        _current = (node_run_id, attempt)
    _ensure_thread()


def ensure_running() -> None:
    """The thread without a run to keep (a pure node type's run holds no lease), for the
    metric counts it flushes."""
    _ensure_thread()


def end() -> None:
    global _current
    with _lock:
        _current = None


def _ensure_thread() -> None:
    global _thread
    if _thread is not None and _thread.is_alive():
        return
    _thread = threading.Thread(target=_loop, name="weconnect-heartbeat", daemon=True)
    _thread.start()


def _flush_on_exit(**kwargs) -> None:
    counters.flush()


# Pool children leave through os._exit (no atexit): Celery's shutdown signal covers them.
worker_process_shutdown.connect(_flush_on_exit, weak=False)
atexit.register(counters.flush)


def _loop() -> None:
    interval = settings.WECONNECT_HEARTBEAT_SECONDS
    stop = threading.Event()
    next_beat = time.monotonic() + interval
    while not stop.wait(min(FLUSH_SECONDS, interval)):
        counters.flush()
        if time.monotonic() < next_beat:
            continue
        next_beat = time.monotonic() + interval
        with _lock:
            current = _current
        if current is None:
            continue
        try:
            close_old_connections()
            store.node_run_extend_lease(
                node_run_id=current[0],
                attempt=current[1],
                lease=timezone.now() + timedelta(seconds=settings.WECONNECT_LEASE_SECONDS),
            )
        except Exception as exc:  # the next beat tries again; the lease has slack
            log.warning("heartbeat failed", extra={"error": repr(exc)})
