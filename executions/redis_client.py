"""The process's Redis client for counters, rate limits and the recovery watch, and the names of
our keys.

Short socket timeouts: Redis holds nothing the engine's correctness rests on (counters stop, the
recovery watch waits for its next round), so a slow Redis must never hold a node run up."""

from __future__ import annotations

from functools import cache

import redis
from django.conf import settings


@cache
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=2, health_check_interval=30
    )


def key(*parts: object) -> str:
    return settings.WECONNECT_KEY_PREFIX + ":".join(str(p) for p in parts)
