"""Counters and histograms that worker processes record in Redis, read at scrape time.

Several processes (web, every worker pool child, Beat) do the work the metrics describe, so an
in-process prometheus_client registry would show only the slice seen by the process scraped.
Instead each process adds its node-run and retry counts up in memory and ``flush()`` sends the
sums as one pipeline of HINCRBY/HINCRBYFLOAT commands; the heartbeat thread of every worker
process flushes once a second (and the process flushes on exit), so a node run makes no Redis
round trip for metrics and a killed process loses at most a second of counts.
``/monitoring/metrics`` reads the hashes back. Recovery passes (rare) are sent at once.

Layout under ``WECONNECT_KEY_PREFIX + "metrics:"``, each a hash:
- ``node_runs``: field ``<type>|<status>`` -> finished node runs;
- ``retries``: field ``<type>`` -> retries scheduled;
- ``duration`` / ``wait``: fields ``<type>|<bucket>`` (non-cumulative bucket counts),
  ``<type>|sum`` and ``<type>|count``; duration is started -> finished of the attempt that
  finished the run, wait is queued -> started;
- ``recovery``: fields ``redispatched``, ``reclaimed``, ``lost``, ``timed_out`` -> what the
  recovery pass repaired.

Metrics must never break the engine: every Redis error is swallowed (and logged at debug).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import redis
from django.conf import settings
from django.utils import timezone

from executions.redis_client import redis_client

log = logging.getLogger("weconnect.metrics")

# Seconds. Node runs range from a no-op (a millisecond) to an HTTP call or a long job.
DURATION_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    600.0,
)
WAIT_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    3600.0,
)
_INF = "+Inf"


def _key(name: str) -> str:
    return f"{settings.WECONNECT_KEY_PREFIX}metrics:{name}"


def _client() -> redis.Redis:
    # The engine's client: short socket timeouts, created once per process.
    return redis_client()


def _bucket(value: float, buckets: tuple[float, ...]) -> str:
    i = bisect_left(buckets, value)
    return _INF if i == len(buckets) else repr(buckets[i])


# Counts not yet sent, per (hash name, field): integers for HINCRBY, floats (the histogram
# sums) for HINCRBYFLOAT. The lock is held for a few dict updates only: the heartbeat thread
# swaps the dicts out under it and talks to Redis outside it.
_lock = threading.Lock()
_ints: dict[tuple[str, str], int] = {}
_floats: dict[tuple[str, str], float] = {}


def _reset_after_fork() -> None:
    # A forked pool child must not send the counts its parent still holds (they would be
    # counted twice); the lock may have been held by another thread at fork time.
    global _lock, _ints, _floats
    _lock, _ints, _floats = threading.Lock(), {}, {}


os.register_at_fork(after_in_child=_reset_after_fork)


def _add(ints: Iterable[tuple[str, str]], floats: Iterable[tuple[str, str, float]] = ()) -> None:
    with _lock:
        for k in ints:
            _ints[k] = _ints.get(k, 0) + 1
        for name, f, v in floats:
            _floats[(name, f)] = _floats.get((name, f), 0.0) + v


def _observed(name: str, label: str, value: float, buckets: tuple[float, ...]):
    return [(name, f"{label}|{_bucket(value, buckets)}"), (name, f"{label}|count")], [
        (name, f"{label}|sum", value)
    ]


def flush() -> None:
    """Send the counts this process added up since the last flush (one pipeline)."""
    global _ints, _floats
    with _lock:
        ints, floats = _ints, _floats
        _ints, _floats = {}, {}
    if not ints and not floats:
        return

    def fill(pipe) -> None:
        for (name, f), v in ints.items():
            pipe.hincrby(_key(name), f, v)
        for (name, f), v in floats.items():
            pipe.hincrbyfloat(_key(name), f, v)

    _send(fill)


def _send(fill) -> None:
    try:
        pipe = _client().pipeline(transaction=False)
        fill(pipe)
        pipe.execute()
    except Exception as exc:  # Redis down, a timeout, a bad value: metrics are best effort
        log.debug("metrics not recorded: %r", exc)


def _clean(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else max(0.0, value)


def record_node_run(
    node_type: str, status: str, duration_s: float | None, wait_s: float | None
) -> None:
    """A node run finished (succeeded or failed): count it and observe its times (added up in
    this process; sent by the next ``flush()``)."""
    duration, wait = _clean(duration_s), _clean(wait_s)
    ints: list[tuple[str, str]] = [("node_runs", f"{node_type}|{status}")]
    floats: list[tuple[str, str, float]] = []
    if duration is not None:
        i, f = _observed("duration", node_type, duration, DURATION_BUCKETS)
        ints += i
        floats += f
    if wait is not None:
        i, f = _observed("wait", node_type, wait, WAIT_BUCKETS)
        ints += i
        floats += f
    _add(ints, floats)


def observe_node_run(*, run, node_type: str, status: str) -> None:
    """``record_node_run`` for a run the runner just finished (as claimed, with ``started_at``
    being the start of the attempt that finished it).

    The wait (queued -> started) is observed for first attempts only: a later attempt's wait
    is mostly its retry backoff, which is policy, not queueing. ``queued_at``/``started_at``
    are read only if the runner loaded them (a deferred field would cost a query on the hot
    path).
    """
    queued, started = run.__dict__.get("queued_at"), run.__dict__.get("started_at")
    if started is None:
        record_node_run(node_type, status, None, None)
        return
    wait = (
        (started - queued).total_seconds() if queued and run.__dict__.get("attempts") == 1 else None
    )
    record_node_run(node_type, status, (timezone.now() - started).total_seconds(), wait)


def record_retry(node_type: str) -> None:
    _add([("retries", node_type)])


def record_redispatch(n: int) -> None:
    record_recovery({"redispatched": n})


def record_recovery(report: Mapping[str, int]) -> None:
    """A recovery pass's repairs: re-dispatched, reclaimed (lease expired), lost, timed out."""
    counts = {k: int(v) for k, v in report.items() if v}
    if counts:
        _send(lambda pipe: [pipe.hincrby(_key("recovery"), k, v) for k, v in counts.items()])


def record_recovery_ran(when: float | None = None) -> None:
    """The recovery pass finished: health reads this instead of Beat's lazily saved
    ``last_run_at`` (written back only every few minutes), so it is right from the first pass."""
    stamp = time.time() if when is None else when
    _send(lambda pipe: pipe.set(_key("recovery_last_run"), repr(stamp)))


def recovery_last_run(client: redis.Redis | None = None) -> float | None:
    """When the recovery pass last finished (epoch seconds), or None. Raises redis errors."""
    raw = (client or _client()).get(_key("recovery_last_run"))
    return float(raw) if raw else None


# --- reading ------------------------------------------------------------------------------


@dataclass
class Histogram:
    buckets: list[tuple[str, float]] = field(default_factory=list)  # cumulative, "+Inf" last
    sum: float = 0.0
    count: float = 0.0


@dataclass
class Snapshot:
    node_runs: dict[tuple[str, str], int] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)
    recovery: dict[str, int] = field(default_factory=dict)
    duration: dict[str, Histogram] = field(default_factory=dict)
    wait: dict[str, Histogram] = field(default_factory=dict)


def _histograms(raw: dict[bytes, bytes], buckets: Iterable[float]) -> dict[str, Histogram]:
    per: dict[str, dict[str, float]] = {}
    for f, v in raw.items():
        label, _, part = f.decode().rpartition("|")
        per.setdefault(label, {})[part] = float(v)
    out: dict[str, Histogram] = {}
    bounds = [repr(b) for b in buckets] + [_INF]
    for label, parts in sorted(per.items()):
        running, cumulative = 0.0, []
        for b in bounds:
            running += parts.get(b, 0.0)
            cumulative.append((b, running))
        out[label] = Histogram(cumulative, parts.get("sum", 0.0), parts.get("count", running))
    return out


def read(client: redis.Redis | None = None) -> Snapshot:
    """All counters in one pipelined round trip. Raises redis errors: the caller decides."""
    pipe = (client or _client()).pipeline(transaction=False)
    for name in ("node_runs", "retries", "recovery", "duration", "wait"):
        pipe.hgetall(_key(name))
    node_runs, retries, recovery, duration, wait = pipe.execute()
    snap = Snapshot()
    for f, v in node_runs.items():
        node_type, _, status = f.decode().rpartition("|")
        snap.node_runs[(node_type, status)] = int(v)
    snap.retries = {f.decode(): int(v) for f, v in retries.items()}
    snap.recovery = {f.decode(): int(v) for f, v in recovery.items()}
    snap.duration = _histograms(duration, DURATION_BUCKETS)
    snap.wait = _histograms(wait, WAIT_BUCKETS)
    return snap
