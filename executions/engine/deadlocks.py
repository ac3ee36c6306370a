"""Rerunning a transaction that PostgreSQL aborted to break a deadlock."""

from __future__ import annotations

import logging

from django.db import OperationalError

log = logging.getLogger("weconnect.engine")


def retry_on_deadlock(fn, attempts: int = 5):
    """Run ``fn`` (which opens its own transaction) again if Postgres aborted it as a deadlock
    victim or a serialization failure; everything in it is a compare-and-set, so rerunning is
    safe."""
    for i in range(attempts):
        try:
            return fn()
        except OperationalError as exc:
            cause = getattr(exc, "__cause__", None)
            sqlstate = getattr(cause, "sqlstate", None)
            if sqlstate not in ("40P01", "40001") or i == attempts - 1:
                raise
            log.info("transaction retried after %s", sqlstate)
