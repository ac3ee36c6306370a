"""The one error vocabulary of executions: what a node raises, what a service refuses, and the
HTTP status the API answers each with.

Node errors never reach the API (the engine records them on the node run); they are here so
that node types, the engine and the services name failures from a single module that imports
nothing of ours, below every layer that raises or catches them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class NodeError(Exception):
    """A node failed. ``retry_after`` (seconds) overrides the backoff for this retry."""

    retryable: bool = True

    def __init__(
        self,
        message: str,
        *,
        retryable: bool | None = None,
        retry_after: float | None = None,
        error_type: str | None = None,
        details: Mapping[str, Any] | None = None,
    ):
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable
        self.retry_after = retry_after
        self.error_type = error_type or type(self).__name__
        self.details = dict(details or {})


class NonRetryableError(NodeError):
    retryable = False


class NodeTimeout(NodeError):
    """The node ran past its timeout_seconds (soft time limit)."""


class Conflict(Exception):
    """The request cannot be carried out in the current state (answered as 409)."""


# Service errors -> the HTTP status the API answers them with (executions/api/errors.py).
HTTP_STATUS: dict[type[Exception], int] = {
    Conflict: 409,
}


def http_status(exc: BaseException) -> int | None:
    """The status for a service error, or None when the API does not map it here."""
    for cls, code in HTTP_STATUS.items():
        if isinstance(exc, cls):
            return code
    return None
