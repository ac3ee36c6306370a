"""Named rate limits shared by every worker: one atomic Redis script per start.

A limited node takes a start token right after its run is claimed and before its node type
runs. The bucket is a sliding log of grant times (a sorted set), so at most ``limit`` starts
are granted in any window of ``period_seconds`` on Redis's clock, across every worker
process. Without a token the script answers how long to wait; the task body then parks the
run (``outcome.wait_for_rate_limit``) instead of holding a worker.

Keys live under ``WECONNECT_KEY_PREFIX`` and expire one period after their last use, so an
idle limit leaves nothing behind. A Redis that restarted (keys and script cache gone) starts
from an empty log: redis-py's ``Script`` runs EVALSHA and, on NOSCRIPT, loads the script again.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import redis
from django.conf import settings

from executions.errors import NodeError
from executions.models import RateLimit
from executions.nodes import Context
from executions.nodes.templating import Scope, render_string
from executions.redis_client import key as redis_key
from executions.redis_client import redis_client

log = logging.getLogger("weconnect.engine")

# KEYS[1]: the log of grant times (sorted set, score = ms on Redis's clock).
# KEYS[2]: the wake-up cursor: the last wake-up time handed to a waiting run.
# ARGV: limit, period in ms, a member unique to this request.
# Returns "taken <ms>" (the grant time) or "wait <ms>".
#
# Grants are kept while they are inside the window (now - period, now]; a new grant needs
# fewer than `limit` of them, hence any two grants `limit` apart are at least one period apart
# and no window of one period ever holds more than `limit`. Waiting runs are given wake-up
# times one interval (period / limit) apart, so they come back one by one as tokens free up
# rather than all at once.
_TAKE = """
redis.replicate_commands()
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
if redis.call('ZCARD', KEYS[1]) < limit then
    redis.call('ZADD', KEYS[1], now, ARGV[3])
    redis.call('PEXPIRE', KEYS[1], period)
    return 'taken ' .. now
end
local oldest = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
local step = math.max(1, math.floor(period / limit))
local cursor = tonumber(redis.call('GET', KEYS[2]) or '0')
local wake = math.max(oldest + period, cursor + step)
redis.call('SET', KEYS[2], wake, 'PX', wake - now + period)
return 'wait ' .. (wake - now)
"""


@dataclass(frozen=True)
class Decision:
    name: str
    key: str | None
    granted_at: datetime | None = None  # on Redis's clock
    wait_ms: int = 0
    unavailable: bool = False

    def waiting_for(self, until: datetime) -> dict[str, Any]:
        doc = {"rate_limit": self.name, "key": self.key, "until": until.isoformat()}
        if self.unavailable:
            doc["reason"] = "rate limit store unreachable"
        return doc


@cache
def _script(client: redis.Redis):
    return client.register_script(_TAKE)


def bucket_keys(owner_id: int, name: str, key: str | None) -> list[str]:
    """The two Redis keys of one bucket. The hash tag keeps both in one cluster slot; a long
    key value is hashed so a key template cannot make Redis keys of any size."""
    part = key or ""
    if len(part) > 100:
        part = "sha256:" + hashlib.sha256(part.encode()).hexdigest()
    tag = f"{{{owner_id}:{name}:{part}}}"
    return [redis_key("rl", tag, "log"), redis_key("rl", tag, "wake")]


def take_token(*, owner_id: int, name: str, key: str | None, limit: int, period_ms: int):
    """One EVALSHA: ``("taken", grant time)`` or ``("wait", ms)``."""
    client = redis_client()
    answer = _script(client)(
        keys=bucket_keys(owner_id, name, key),
        args=[limit, period_ms, secrets.token_hex(8)],
        client=client,
    )
    word, _, value = (answer.decode() if isinstance(answer, bytes) else answer).partition(" ")
    if word == "taken":
        return "taken", datetime.fromtimestamp(int(value) / 1000, tz=UTC)
    return "wait", max(1, int(value))


def render_key(ctx: Context, source: str | None) -> str | None:
    if not source:
        return None
    value = render_string(source, Scope(ctx), "rate_limit.key")
    return value if isinstance(value, str) else str(value)


def rate_limit_take(ctx: Context) -> Decision:
    """Take a start token for the node of ``ctx``. Raises a non-retryable ``NodeError`` when
    the limit no longer exists or the key template fails. When Redis cannot be reached the
    run waits (``WECONNECT_RATE_LIMIT_UNAVAILABLE_DELAY``): a limit that cannot be checked is
    not taken as a licence to run."""
    ref = ctx.node.rate_limit or {}
    name = ref["name"]
    row = (
        RateLimit.objects.filter(owner_id=ctx.owner_id, name=name)
        .values_list("limit", "period_seconds")
        .first()
    )
    if row is None:
        raise NodeError(
            f"rate limit {name!r} does not exist", retryable=False, error_type="RateLimitMissing"
        )
    limit, period_seconds = row
    key = render_key(ctx, ref.get("key"))
    try:
        word, value = take_token(
            owner_id=ctx.owner_id, name=name, key=key, limit=limit, period_ms=period_seconds * 1000
        )
    except redis.RedisError as exc:
        log.warning(
            "rate limit store unreachable; the run waits",
            extra={"rate_limit": name, "node": ctx.node.key, "error": repr(exc)},
        )
        delay_ms = int(settings.WECONNECT_RATE_LIMIT_UNAVAILABLE_DELAY * 1000)
        return Decision(name, key, wait_ms=delay_ms, unavailable=True)
    if word == "taken":
        return Decision(name, key, granted_at=value)
    return Decision(name, key, wait_ms=value)
