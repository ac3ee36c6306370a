"""A Redis lock with an owner token: SET NX PX to take it, compare-and-delete to release it,
so a holder whose lock expired can never release somebody else's."""

from __future__ import annotations

import logging
import secrets
import time

import redis
from django.conf import settings

from executions.redis_client import key, redis_client  # noqa: F401  (key: the lock names)

log = logging.getLogger("weconnect.engine")

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class RedisLock:
    def __init__(self, name: str, ttl_seconds: int | None = None):
        self.name = name
        self.ttl_ms = int((ttl_seconds or settings.WECONNECT_LOCK_TTL_SECONDS) * 1000)
        self.token = secrets.token_hex(8)
        self.held = False

    def acquire(self, timeout: float = 10.0) -> bool:
        """Try for up to ``timeout`` seconds. Returns False (and logs) if Redis is unreachable
        or the lock stays taken: callers rely on the database for correctness regardless."""
        client = redis_client()
        deadline = time.monotonic() + timeout
        delay = 0.001
        try:
            while True:
                if client.set(self.name, self.token, nx=True, px=self.ttl_ms):
                    self.held = True
                    return True
                if time.monotonic() >= deadline:
                    log.warning("lock not acquired in time", extra={"lock": self.name})
                    return False
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        except redis.RedisError as exc:
            log.warning("lock unavailable", extra={"lock": self.name, "error": str(exc)})
            return False

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        try:
            redis_client().eval(_RELEASE, 1, self.name, self.token)
        except redis.RedisError as exc:  # it expires on its own
            log.warning("lock release failed", extra={"lock": self.name, "error": str(exc)})
