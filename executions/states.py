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
    # Paused: no node run starts (claims refuse, queued runs stay queued), running ones finish
    # and record their result but schedule nothing; the deadline still applies.
    PAUSED = "paused"
    # Queued: over its workflow's concurrency limit, waiting in line (in arrival order) for a
    # slot; no node run exists yet. Admitted, it becomes pending.
    QUEUED = "queued"


class NodeRunStatus(models.TextChoices):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class BulkStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"


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
    BACKFILL = "backfill"
    EVENT = "event"
    FOR_EACH = "for_each"


class WebhookRespond(models.TextChoices):
    IMMEDIATELY = "immediately"
    ON_COMPLETION = "on_completion"


class SlotOutcome(models.TextChoices):
    """What became of one cron slot of a schedule (executions.models.ScheduleSlot)."""

    STARTED = "started"  # an execution was started for it
    BUFFERED = "buffered"  # an execution waits for the previous run to finish (buffer_one)
    SKIPPED = "skipped"  # the previous run was still active (overlap skip, or buffer full)
    MISSED = "missed"  # Beat was down and catch-up did not run it


E, N = ExecutionStatus, NodeRunStatus

# Active: node runs may start and the engine schedules successors. A paused execution is not
# active but not finished either: it can still be cancelled, time out, or be unpaused.
EXECUTION_ACTIVE = frozenset({E.PENDING, E.RUNNING})
EXECUTION_UNFINISHED = EXECUTION_ACTIVE | {E.PAUSED, E.QUEUED}
# What holds one of a concurrency limit's slots: started and not finished (paused keeps its slot).
EXECUTION_HOLDING_SLOT = EXECUTION_ACTIVE | {E.PAUSED}
EXECUTION_TERMINAL = frozenset({E.SUCCEEDED, E.FAILED, E.CANCELLED, E.TIMED_OUT})
NODE_ACTIVE = frozenset({N.PENDING, N.QUEUED, N.RUNNING, N.RETRYING})
NODE_TERMINAL = frozenset({N.SUCCEEDED, N.FAILED, N.SKIPPED, N.CANCELLED})

# target status -> the statuses it may be reached from.
EXECUTION_TRANSITIONS: dict[str, frozenset[str]] = {
    # queued when created over a concurrency limit; pending again when admitted to a slot.
    E.QUEUED: frozenset({E.PENDING}),
    E.PENDING: frozenset({E.QUEUED}),
    # running from paused: unpause.
    E.RUNNING: frozenset({E.PENDING, E.PAUSED}),
    E.PAUSED: frozenset({E.PENDING, E.RUNNING}),
    E.SUCCEEDED: frozenset({E.PENDING, E.RUNNING}),
    E.FAILED: frozenset({E.PENDING, E.RUNNING}),
    E.CANCELLED: frozenset({E.PENDING, E.RUNNING, E.PAUSED, E.QUEUED}),
    E.TIMED_OUT: frozenset({E.PENDING, E.RUNNING, E.PAUSED, E.QUEUED}),
}

NODE_RUN_TRANSITIONS: dict[str, frozenset[str]] = {
    # queued again: a wait parks the run, recovery re-dispatches it, or a wake makes it due.
    N.QUEUED: frozenset({N.PENDING, N.RUNNING, N.RETRYING, N.QUEUED}),
    # running from running: a redelivered message takes over a run whose worker died.
    N.RUNNING: frozenset({N.QUEUED, N.RETRYING, N.RUNNING}),
    N.RETRYING: frozenset({N.RUNNING}),
    # succeeded from queued: a pure node type's run ends in the one write of its hop, never
    # having been claimed (executions.store.sql.PEEK); failed from queued likewise, routed.
    N.SUCCEEDED: frozenset({N.RUNNING, N.PENDING, N.QUEUED}),
    N.FAILED: frozenset({N.RUNNING, N.QUEUED, N.RETRYING}),
    N.SKIPPED: frozenset({N.PENDING}),
    N.CANCELLED: frozenset({N.PENDING, N.QUEUED, N.RUNNING, N.RETRYING}),
}


# A bulk operation is run once: claimed from pending, finished from running.
BULK_TRANSITIONS: dict[str, frozenset[str]] = {
    BulkStatus.RUNNING: frozenset({BulkStatus.PENDING}),
    BulkStatus.FINISHED: frozenset({BulkStatus.RUNNING}),
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
