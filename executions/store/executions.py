"""Status writes of executions: one function per transition of EXECUTION_TRANSITIONS."""

from __future__ import annotations

from typing import Any

from django.db.models import DateTimeField, Value
from django.db.models.functions import Coalesce

from executions.models import Execution
from executions.states import EXECUTION_TRANSITIONS, ExecutionStatus
from executions.store.transition import transition

E = ExecutionStatus


def execution_start(*, execution_id, now) -> bool:
    """pending -> running, when its first node run is claimed."""
    return bool(
        transition(
            Execution.objects.filter(id=execution_id),
            E.RUNNING,
            table=EXECUTION_TRANSITIONS,
            started_at=now,
        )
    )


def execution_succeed(*, execution_id, output: Any, now) -> bool:
    """pending | running -> succeeded, with the outputs of its sinks."""
    return bool(
        transition(
            Execution.objects.filter(id=execution_id),
            E.SUCCEEDED,
            table=EXECUTION_TRANSITIONS,
            output=output,
            finished_at=now,
        )
    )


def execution_end(*, execution_id, status: str, error: Any, now) -> bool:
    """pending | running -> failed | cancelled | timed_out, with ``error``."""
    if status == E.SUCCEEDED:
        raise ValueError("an execution succeeds through execution_succeed")
    return bool(
        transition(
            Execution.objects.filter(id=execution_id),
            status,
            table=EXECUTION_TRANSITIONS,
            error=error,
            finished_at=now,
        )
    )


def execution_pause(*, execution_id) -> bool:
    """pending | running -> paused: no node run starts until it is unpaused."""
    return bool(
        transition(Execution.objects.filter(id=execution_id), E.PAUSED, table=EXECUTION_TRANSITIONS)
    )


def execution_unpause(*, execution_id, now) -> bool:
    """paused -> running (started now if it never had)."""
    return bool(
        transition(
            Execution.objects.filter(id=execution_id),
            E.RUNNING,
            table=EXECUTION_TRANSITIONS,
            sources=[E.PAUSED],
            started_at=Coalesce("started_at", Value(now), output_field=DateTimeField()),
        )
    )


def execution_queue(*, execution_id, deadline_at) -> bool:
    """pending -> queued: created over its workflow's concurrency limit, it waits in line
    (at most until ``deadline_at``)."""
    return bool(
        transition(
            Execution.objects.filter(id=execution_id),
            E.QUEUED,
            table=EXECUTION_TRANSITIONS,
            deadline_at=deadline_at,
        )
    )


def execution_admit(*, execution_id, deadline_at) -> bool:
    """queued -> pending: a slot is free; its deadline counts from now."""
    return bool(
        transition(
            Execution.objects.filter(id=execution_id),
            E.PENDING,
            table=EXECUTION_TRANSITIONS,
            deadline_at=deadline_at,
        )
    )
