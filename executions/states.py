"""Status vocabularies and the one table of allowed transitions.

Every status change in WeConnect is a conditional UPDATE whose WHERE clause names the allowed
source statuses taken from these tables, made by the functions of :mod:`executions.store`
(one per transition, and nowhere else). A message that arrives late, twice, or after
a cancel finds the row already moved on, updates nothing, and is dropped.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import models


class ExecutionStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


class NodeRunStatus(models.TextChoices):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class Priority(models.TextChoices):
    """How urgently an execution's node runs are taken from the broker (engine/dispatch.py)."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class Trigger(models.TextChoices):
    API = "api"
    WEBHOOK = "webhook"
    SCHEDULE = "schedule"
    RETRY = "retry"
    SUB_WORKFLOW = "sub_workflow"
    ADMIN = "admin"


E, N = ExecutionStatus, NodeRunStatus

EXECUTION_ACTIVE = frozenset({E.PENDING, E.RUNNING})
EXECUTION_TERMINAL = frozenset({E.SUCCEEDED, E.FAILED, E.CANCELLED, E.TIMED_OUT})
NODE_ACTIVE = frozenset({N.PENDING, N.QUEUED, N.RUNNING, N.RETRYING})
NODE_TERMINAL = frozenset({N.SUCCEEDED, N.FAILED, N.SKIPPED, N.CANCELLED})

# target status -> the statuses it may be reached from.
EXECUTION_TRANSITIONS: dict[str, frozenset[str]] = {
    E.RUNNING: frozenset({E.PENDING}),
    E.SUCCEEDED: frozenset({E.PENDING, E.RUNNING}),
    E.FAILED: frozenset({E.PENDING, E.RUNNING}),
    E.CANCELLED: frozenset({E.PENDING, E.RUNNING}),
    E.TIMED_OUT: frozenset({E.PENDING, E.RUNNING}),
}

NODE_RUN_TRANSITIONS: dict[str, frozenset[str]] = {
    # queued again: a wait parks the run, recovery re-dispatches it, or a wake makes it due.
    N.QUEUED: frozenset({N.PENDING, N.RUNNING, N.RETRYING, N.QUEUED}),
    # running from running: a redelivered message takes over a run whose worker died.
    N.RUNNING: frozenset({N.QUEUED, N.RETRYING, N.RUNNING}),
    N.RETRYING: frozenset({N.RUNNING}),
    N.SUCCEEDED: frozenset({N.RUNNING, N.PENDING}),
    N.FAILED: frozenset({N.RUNNING, N.QUEUED, N.RETRYING}),
    N.SKIPPED: frozenset({N.PENDING}),
    N.CANCELLED: frozenset({N.PENDING, N.QUEUED, N.RUNNING, N.RETRYING}),
}


def allowed_sources(table: dict[str, frozenset[str]], target: str) -> frozenset[str]:
    return table[target]


def sources_for(
    table: dict[str, frozenset[str]], target: str, sources: Iterable[str] | None = None
) -> frozenset[str]:
    """The statuses ``target`` may be reached from, narrowed to ``sources`` when given (which
    may never widen them: a narrowing outside the table is a bug, raised at once)."""
    allowed = table[target]
    if sources is None:
        return allowed
    narrowed = frozenset(sources)
    if not narrowed <= allowed:
        raise ValueError(f"{sorted(narrowed - allowed)} -> {target} is not an allowed transition")
    return narrowed
