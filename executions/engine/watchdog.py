"""Recovery without Beat: every worker watches when the recovery pass last ran.

Beat is one process; when it hangs (a broker connection stuck in a reconnect, a host paused)
or is not deployed, nothing re-dispatches lost messages or takes over expired leases, and
executions wait for ever. So each worker's main process runs a daemon thread that reads the
recovery pass's own timestamp (written to Redis at the end of every pass, whoever ran it)
every WECONNECT_RECOVERY_INTERVAL_SECONDS. When it is older than
WECONNECT_RECOVERY_FALLBACK_SECONDS, the first worker to take a short Redis lock runs the pass
itself, in its own process, so that neither Beat nor the broker's workflow queue is needed.

The pass is idempotent (every repair is a compare-and-set), so a worker's pass racing a late
Beat pass, or two workers' passes after a lock lost with Redis, repair each thing once.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time

from celery.signals import worker_ready
from django.conf import settings
from django.db import connections

from executions import counters
from executions.engine.recovery import recovery_run
from executions.redis_client import redis_client

log = logging.getLogger("weconnect.engine")

_thread: threading.Thread | None = None
_stop = threading.Event()


_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


def _lock_key() -> str:
    return f"{settings.WECONNECT_KEY_PREFIX}recovery:fallback"


def _since_key() -> str:
    # Beside the pass's own mark (metrics:recovery_last_run), among the keys meant to stay.
    return f"{settings.WECONNECT_KEY_PREFIX}metrics:recovery_watched_since"


def is_due(now: float | None = None) -> bool:
    """Whether the last recovery pass is older than the fallback allows. With no pass on
    record (none ran yet, or Redis restarted and lost the mark) the watch counts from the
    moment a worker first saw none (kept in Redis for every worker): Beat gets its usual time
    to run the pass before a worker does."""
    after = settings.WECONNECT_RECOVERY_FALLBACK_SECONDS
    if after <= 0:
        return False
    now = now or time.time()
    client = redis_client()
    last = counters.recovery_last_run(client)
    if last is None:
        client.set(_since_key(), repr(now), nx=True, ex=max(60, 10 * after))
        last = float(client.get(_since_key()) or now)
    return now - last > after


def run_if_due() -> dict | None:
    """Run the recovery pass here when it is overdue and no other worker took it first: the
    pass's report, or None when nothing was run."""
    if not is_due():
        return None
    lease = max(1, settings.WECONNECT_RECOVERY_INTERVAL_SECONDS)
    token = secrets.token_hex(8)
    client = redis_client()
    if not client.set(_lock_key(), token, nx=True, ex=lease):
        return None
    try:
        # Checked again under the lock: another worker's pass may have ended meanwhile.
        if not is_due():
            return None
        last = counters.recovery_last_run(client)
        log.warning(
            "the recovery pass is overdue: this worker runs it",
            extra={
                "recovery_last_run": last,
                "fallback_after": settings.WECONNECT_RECOVERY_FALLBACK_SECONDS,
            },
        )
        report = recovery_run().as_dict()
        counters.record_recovery_ran()
        counters.record_recovery({"fallback_passes": 1})
        return report
    finally:
        # Released once the pass's mark is written (only if still ours: it may have expired
        # and been taken by another worker), so no lock outlives the pass.
        client.eval(_RELEASE, 1, _lock_key(), token)


def _loop() -> None:
    interval = max(1, settings.WECONNECT_RECOVERY_INTERVAL_SECONDS)
    while not _stop.wait(interval):
        try:
            run_if_due()
        except Exception as exc:  # Redis or PostgreSQL away: the next round tries again
            log.warning("recovery fallback failed", extra={"error": repr(exc)})
        finally:
            # This thread's connection is its own: closed after each round so that none is
            # kept between rounds (nor inherited by a pool process forked meanwhile).
            try:
                connections.close_all()
            except Exception:  # noqa: BLE001 - a broken connection that cannot even close
                pass


def start() -> None:
    """Start the watch in this process (a worker's main process, once it is ready)."""
    global _thread
    if settings.WECONNECT_RECOVERY_FALLBACK_SECONDS <= 0:
        return
    if _thread is not None and _thread.is_alive():
        return
    _stop.clear()
    _thread = threading.Thread(target=_loop, name="weconnect-recovery-watch", daemon=True)
    _thread.start()


def stop() -> None:
    _stop.set()


def _on_worker_ready(**kwargs) -> None:
    start()  # the worker's main process, after its pool has started


worker_ready.connect(_on_worker_ready, weak=False)
