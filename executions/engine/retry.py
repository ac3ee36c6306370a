"""The retry policy of a node: exponential backoff with optional full jitter."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

DEFAULT_RETRY = {
    "max_retries": 0,
    "backoff_seconds": 1.0,
    "max_backoff_seconds": 60.0,
    "jitter": True,
}


def retry_policy(retry: Mapping[str, Any] | None) -> dict[str, Any]:
    return {**DEFAULT_RETRY, **(retry or {})}


def backoff_delay(
    attempt: int, retry: Mapping[str, Any], rand: Callable[[], float] = random.random
) -> float:
    """Delay before the retry that follows failed attempt ``attempt`` (1-based):
    min(max_backoff_seconds, backoff_seconds * 2^(attempt-1)), drawn uniformly from
    [0, that] when jitter is on (full jitter)."""
    policy = retry_policy(retry)
    base = min(
        float(policy["max_backoff_seconds"]), float(policy["backoff_seconds"]) * 2 ** (attempt - 1)
    )
    return base * rand() if policy["jitter"] else base


def should_retry(attempt: int, retry: Mapping[str, Any], retryable: bool) -> bool:
    return retryable and attempt <= int(retry_policy(retry)["max_retries"])
