"""The retry policy of a node: exponential backoff with optional full jitter.

By default a failed node is retried 3 times, after 1 s, 2 s and 4 s (as the engine WeConnect
replaces did). A workflow's ``retry`` replaces fields of this default for all its nodes, a
node's ``retry`` replaces fields of the workflow's; non-retryable errors are never retried.
The policy in force is resolved when the workflow is saved and stored on every node."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

DEFAULT_RETRY = {
    "max_retries": 3,
    "backoff_seconds": 1.0,
    "max_backoff_seconds": 60.0,
    "jitter": False,
}


def retry_policy(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """The default, overridden field by field by each layer in turn (workflow, then node)."""
    policy = dict(DEFAULT_RETRY)
    for layer in layers:
        policy.update(layer or {})
    return policy


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
