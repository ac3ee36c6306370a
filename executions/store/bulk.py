"""Status writes of bulk operations (BULK_TRANSITIONS): a job runs once."""

from __future__ import annotations

from executions.models import BulkOperation
from executions.states import BULK_TRANSITIONS, BulkStatus
from executions.store.transition import transition


def bulk_operation_claim(*, operation_id, now) -> bool:
    """pending -> running; a duplicate message finds it claimed."""
    return bool(
        transition(
            BulkOperation.objects.filter(id=operation_id),
            BulkStatus.RUNNING,
            table=BULK_TRANSITIONS,
            started_at=now,
        )
    )


def bulk_operation_finish(*, operation_id, now) -> bool:
    """running -> finished."""
    return bool(
        transition(
            BulkOperation.objects.filter(id=operation_id),
            BulkStatus.FINISHED,
            table=BULK_TRANSITIONS,
            finished_at=now,
        )
    )
