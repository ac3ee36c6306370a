"""Bulk operations: retry or cancel every execution matching a filter, as a background job.

``bulk_operation_start`` writes the job (or finds the one with the same Idempotency-Key) and
sends its task after commit; ``bulk_operation_run`` (the task's body) fixes the set of
executions, then retries or cancels them one by one through the same services as the API,
counting what was done and what was refused (a running execution cannot be retried, a
finished one cannot be cancelled) in batches.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from executions.models import BulkOperation, Execution
from executions.services.executions import Conflict, execution_cancel, execution_retry
from executions.store.bulk import bulk_operation_claim, bulk_operation_finish
from weconnect.celery import app

log = logging.getLogger("weconnect.engine")

TASK_NAME = "weconnect.bulk_operation"
BATCH = 50
MAX_ERRORS = 100


def bulk_matching(*, owner, filter: Mapping[str, Any], before=None) -> QuerySet[Execution]:
    """The executions a job with ``filter`` acts on: the owner's (every one for a superuser),
    created before ``before`` (the job's own creation, so a retry job never retries the
    executions it starts)."""
    qs = (
        Execution.objects.all()
        if owner.is_superuser
        else Execution.objects.filter(workflow__owner=owner)
    )
    if filter.get("workflow"):
        qs = qs.filter(workflow_id=filter["workflow"])
    if filter.get("status"):
        qs = qs.filter(status=filter["status"])
    if filter.get("created_after"):
        qs = qs.filter(created_at__gte=filter["created_after"])
    if filter.get("created_before"):
        qs = qs.filter(created_at__lt=filter["created_before"])
    if filter.get("ids") is not None:
        qs = qs.filter(id__in=list(filter["ids"]))
    if before is not None:
        qs = qs.filter(created_at__lt=before)
    return qs


def _json_filter(filter: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in filter.items():
        if value is None:
            continue
        if key == "ids":
            out[key] = [str(v) for v in value]
        elif hasattr(value, "isoformat"):
            out[key] = value.isoformat()
        else:
            out[key] = str(value)
    return out


def bulk_operation_start(
    *,
    owner,
    action: str,
    filter: Mapping[str, Any],
    mode: str = "from_failed",
    idempotency_key: str | None = None,
) -> tuple[BulkOperation, bool]:
    """Create a job and send it after commit. Returns (job, created); the same
    ``idempotency_key`` from the same owner returns the existing job and starts nothing."""
    if idempotency_key:
        existing = BulkOperation.objects.filter(
            owner=owner, idempotency_key=idempotency_key
        ).first()
        if existing:
            return existing, False
    now = timezone.now()
    try:
        with transaction.atomic():
            operation = BulkOperation.objects.create(
                owner=owner,
                action=action,
                filter=_json_filter(filter),
                mode=mode,
                idempotency_key=idempotency_key,
                matched=bulk_matching(owner=owner, filter=filter, before=now).count(),
            )
            transaction.on_commit(lambda: _send(operation.id))
    except IntegrityError:
        if not idempotency_key:
            raise
        # A concurrent request with the same key committed first.
        return BulkOperation.objects.get(owner=owner, idempotency_key=idempotency_key), False
    return operation, True


def _send(operation_id) -> None:
    try:
        app.send_task(TASK_NAME, args=[str(operation_id)], soft_time_limit=3600, time_limit=3660)
    except Exception as exc:  # the job stays pending; it is visible as such in the API
        log.warning(
            "bulk operation not sent", extra={"bulk_id": str(operation_id), "error": repr(exc)}
        )


def bulk_operation_run(*, operation_id, batch: int = BATCH) -> str:
    """Carry out a pending job. A duplicate message finds it claimed and does nothing."""
    now = timezone.now()
    if not bulk_operation_claim(operation_id=operation_id, now=now):
        return "skipped"
    operation = BulkOperation.objects.select_related("owner").get(id=operation_id)
    ids = list(
        bulk_matching(owner=operation.owner, filter=operation.filter, before=operation.created_at)
        .order_by("created_at", "id")
        .values_list("id", flat=True)
    )
    BulkOperation.objects.filter(id=operation_id).update(matched=len(ids))
    errors: list[dict[str, str]] = []
    for start in range(0, len(ids), batch):
        done = failed = 0
        chunk = Execution.objects.filter(id__in=ids[start : start + batch]).select_related(
            "workflow", "snapshot"
        )
        for execution in chunk.order_by("created_at", "id"):
            try:
                if operation.action == BulkOperation.Action.CANCEL:
                    execution_cancel(
                        execution=execution, reason=f"cancelled by bulk operation {operation.id}"
                    )
                else:
                    execution_retry(execution=execution, mode=operation.mode)
                done += 1
            except Conflict as exc:
                failed += 1
                if len(errors) < MAX_ERRORS:
                    errors.append({"execution": str(execution.id), "error": str(exc)})
        # The job has one runner: counters move by batch so the API shows progress.
        BulkOperation.objects.filter(id=operation_id).update(
            done=F("done") + done, failed=F("failed") + failed, errors=errors
        )
    bulk_operation_finish(operation_id=operation_id, now=timezone.now())
    log.info("bulk operation finished", extra={"bulk_id": str(operation_id)})
    return "finished"
