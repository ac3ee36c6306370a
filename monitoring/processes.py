"""Each web and worker process reports itself to Redis: its role, its state, and what it uses
(resident memory, CPU seconds, open files, start time).

A scrape reaches one web process, but the figures are wanted for every process of the
deployment, and a worker that is still booting (importing, connecting) does not answer the
health ping yet although it is not missing. So every process writes one field of a Redis hash
from a daemon thread every REPORT_SECONDS (one HSET, a fraction of a millisecond), and the
readers drop fields not refreshed for EXPIRE_SECONDS (a process that died).

A worker's main process reports ``starting`` from Celery's ``celeryd_init`` (the first thing a
worker does) until ``worker_ready``; its pool processes and the web processes report ``ready``.
Like the counters, reporting never breaks anything: Redis errors are swallowed.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

import psutil
from django.conf import settings

from executions.redis_client import redis_client

log = logging.getLogger("weconnect.metrics")

REPORT_SECONDS = 5.0
EXPIRE_SECONDS = 30.0
STARTING, READY = "starting", "ready"

_lock = threading.Lock()
_state: dict[str, Any] = {"pid": None, "role": None, "host": None, "state": READY}


def _key() -> str:
    # Beside the counters: aggregate monitoring data, not state of an execution.
    return f"{settings.WECONNECT_KEY_PREFIX}metrics:processes"


def _client():
    # The engine's client: short socket timeouts, created once per process.
    return redis_client()


def usage(process: psutil.Process | None = None) -> dict[str, Any]:
    """This process's resource use, as Prometheus's process collector names it."""
    p = process or psutil.Process()
    with p.oneshot():
        cpu = p.cpu_times()
        try:
            open_files = p.num_fds()
        except AttributeError:  # not on POSIX
            open_files = len(p.open_files())
        return {
            "resident_memory_bytes": p.memory_info().rss,
            "cpu_seconds": round(cpu.user + cpu.system, 3),
            "open_files": open_files,
            "start_time_seconds": round(p.create_time(), 3),
        }


def report() -> None:
    """Write this process's entry now (role, state, usage)."""
    with _lock:
        role, host, state = _state["role"], _state["host"], _state["state"]
    if role is None:
        return
    pid = os.getpid()
    entry = {"role": role, "host": host, "pid": pid, "state": state, "updated": time.time()}
    try:
        entry.update(usage())
        _client().hset(_key(), f"{role}|{host}|{pid}", json.dumps(entry))
    except Exception as exc:  # Redis down, psutil refused: reporting is best effort
        log.debug("process report not written: %r", exc)


def _loop() -> None:
    stop = threading.Event()
    while not stop.wait(REPORT_SECONDS):
        report()


def start(role: str, host: str | None = None, state: str = READY) -> None:
    """Report this process now and from a daemon thread from now on. Called again after a fork
    (a pool process), it starts the thread of the new process: threads do not survive fork."""
    with _lock:
        _state.update(role=role, host=host or _state["host"] or socket.gethostname(), state=state)
        if _state["pid"] == os.getpid():
            started = True
        else:
            _state["pid"], started = os.getpid(), False
    report()
    if not started:
        threading.Thread(target=_loop, name="weconnect-process-report", daemon=True).start()


def current_role() -> str | None:
    with _lock:
        return _state["role"] if _state["pid"] == os.getpid() else None


def set_state(state: str) -> None:
    with _lock:
        _state["state"] = state
    report()


def read(client=None, now: float | None = None) -> list[dict[str, Any]]:
    """Every live process's last report; entries older than EXPIRE_SECONDS are removed.
    Raises Redis errors: the caller decides."""
    client = client or _client()
    now = time.time() if now is None else now
    entries, expired = [], []
    for field, raw in client.hgetall(_key()).items():
        try:
            entry = json.loads(raw)
        except ValueError:
            expired.append(field)
            continue
        if now - float(entry.get("updated", 0)) > EXPIRE_SECONDS:
            expired.append(field)
        else:
            entries.append(entry)
    if expired:
        client.hdel(_key(), *expired)
    return sorted(entries, key=lambda e: (e["role"], e["host"], e["pid"]))


def starting_workers(entries: list[dict[str, Any]]) -> list[str]:
    return sorted({e["host"] for e in entries if e["role"] == "worker" and e["state"] == STARTING})
