"""What becomes of an attempt that did not simply succeed: a retry after a backoff, a park
until a time or a wake-up (a wait), or the failure of the run."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F
from django.utils import timezone

from executions import counters, jsonsafe, store
from executions.engine import dispatch, rate_limits
from executions.engine.retry import backoff_delay, should_retry
from executions.engine.routing import Finish, node_run_finish
from executions.errors import NodeError
from executions.models import Execution, NodeRun
from executions.nodes import Wait
from executions.states import NodeRunStatus
from executions.store.attempts import attempt_record, worker_name

log = logging.getLogger("weconnect.engine")
N = NodeRunStatus


def error_doc(exc: BaseException, error_type: str | None = None, **extra) -> dict[str, Any]:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    doc = {"error": True, "message": message, "type": error_type or type(exc).__name__, **extra}
    # An error quoting what failed (a NUL, a lone surrogate) must still be recordable.
    return jsonsafe.scrub(doc)


def result_not_stored(exc: DatabaseError, fields) -> NodeError:
    """The failure recorded when the database refused a node's result. Not retryable: the
    same result would be refused again, and a crashed task would be run again by recovery,
    repeating the node's side effects."""
    log.error("node result could not be stored: %s", exc, extra=fields)
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return NodeError(
        f"node result could not be stored: {reason}",
        retryable=False,
        error_type="ResultNotStored",
    )


def record_failure(execution, graph, run: NodeRun, attempt: int, failure: NodeError, fields) -> str:
    """Retry the run after its backoff when its policy allows it, else finish it failed."""
    spec = graph.nodes[run.node]
    if should_retry(attempt, spec.retry, failure.retryable):
        delay = (
            failure.retry_after
            if failure.retry_after is not None
            else backoff_delay(attempt, spec.retry)
        )
        delay = max(0.0, float(delay))
        now = timezone.now()
        with transaction.atomic():
            changed = reschedule(
                execution,
                spec,
                run,
                attempt,
                N.RETRYING,
                now,
                now + timedelta(seconds=delay),
                error=error_doc(failure, failure.error_type, attempt=attempt, **failure.details),
                retry_delays=[*run.retry_delays, round(delay, 3)],
                # This attempt's record for the history, in the same UPDATE (no extra query).
                attempt_log=[
                    *run.attempt_log,
                    attempt_record(
                        attempt=attempt,
                        started_at=run.started_at,
                        finished_at=now,
                        worker=worker_name(),
                        error=error_doc(failure, failure.error_type),
                        wait_seconds=delay,
                    ),
                ],
            )
        if changed:
            counters.record_retry(spec.type)
        log.warning("node will retry in %.3fs: %s", delay, failure.message, extra=fields)
        return "retrying" if changed else "discarded"
    output = error_doc(failure, failure.error_type, **failure.details)
    recorded = node_run_finish(
        execution=execution,
        graph=graph,
        node=run.node,
        attempt=attempt,
        result=Finish(N.FAILED, output, None, {**output, "attempts": attempt}),
    )
    if recorded:
        counters.observe_node_run(run=run, node_type=spec.type, status=N.FAILED)
    log.warning("node failed: %s", failure.message, extra=fields)
    return N.FAILED if recorded else "discarded"


def park(execution, graph, run: NodeRun, attempt: int, wait: Wait, fields) -> str:
    """Put the run back to ``queued`` until ``wait.until`` (or until woken), without counting
    the wait as an attempt. No worker is held while it waits."""
    spec = graph.nodes[run.node]
    now = timezone.now()
    until = wait.until
    # A wait with no time (a sub-workflow) is bounded by the execution's deadline.
    not_before = (
        until
        if until is not None
        else Execution.objects.values_list("deadline_at", flat=True).get(id=execution.id)
    )
    with transaction.atomic():
        # A wake that arrived while the node was still running (its sub-workflow finished
        # before it parked) left next_attempt_at set on the running row: resume at once.
        row = (
            NodeRun.objects.select_for_update()
            .filter(id=run.id, status=N.RUNNING, attempts=attempt)
            .values_list("next_attempt_at", flat=True)
        )
        if row and row[0] is not None:
            not_before = now
        changed = reschedule(
            execution,
            spec,
            run,
            attempt,
            N.QUEUED,
            now,
            not_before,
            may_send=until is not None or not_before == now,
            attempts=F("attempts") - 1,
            state=dict(wait.state),
        )
    log.info("node waiting until %s", not_before.isoformat(), extra=fields)
    return "waiting" if changed else "discarded"


def wait_for_rate_limit(execution, graph, run: NodeRun, attempt: int, ctx, fields) -> str | None:
    """Take the node's start token, or park the run until one may be free.

    The token is taken here, after the claim: a duplicate or late message that claims nothing
    never spends one. A run that gets no token goes back to ``queued`` with its attempt not
    counted (as a ``Wait`` does) and ``waiting_for`` saying why, freeing the worker. Returns
    None when the node may run now."""
    try:
        decision = rate_limits.rate_limit_take(ctx)
    except NodeError as exc:
        return record_failure(execution, graph, run, attempt, exc, fields)
    if decision.granted_at is not None:
        # The recorded start of a limited run is its grant time on Redis's clock: every run
        # sharing the limit is timed on that one clock, the one the limit is exact on.
        store.node_run_record_start(
            node_run_id=run.id, attempt=attempt, started_at=decision.granted_at
        )
        return None
    now = timezone.now()
    until = now + timedelta(milliseconds=decision.wait_ms)
    with transaction.atomic():
        changed = reschedule(
            execution,
            graph.nodes[run.node],
            run,
            attempt,
            N.QUEUED,
            now,
            until,
            attempts=F("attempts") - 1,
            waiting_for=decision.waiting_for(until),
        )
    log.info(
        "node waiting for rate limit %s until %s", decision.name, until.isoformat(), extra=fields
    )
    return "rate_limited" if changed else "discarded"


def reschedule(
    execution,
    spec,
    run: NodeRun,
    attempt: int,
    status: str,
    now,
    not_before,
    *,
    may_send: bool = True,
    **fields,
) -> bool:
    """Move attempt ``attempt`` from ``running`` to ``status`` (retrying, or queued for a wait),
    due at ``not_before``. Must run inside a transaction.

    Short delays ride a Celery countdown sent after commit; longer ones are held in the
    database (``dispatched_at`` empty) and sent by the recovery task when due, never as an
    ETA near the visibility timeout, which Redis would deliver twice."""
    delay = max(0.0, (not_before - now).total_seconds())
    sent_now = may_send and delay <= settings.WECONNECT_MAX_ETA_SECONDS
    task_id = dispatch.new_task_id()
    changed = store.node_run_reschedule(
        node_run_id=run.id,
        attempt=attempt,
        status=status,
        next_attempt_at=not_before,
        task_id=task_id,
        dispatched_at=now if sent_now else None,
        **fields,
    )
    if changed and sent_now:
        dispatch.send_on_commit(
            [dispatch.Dispatch(str(execution.id), run.node, task_id, spec.timeout_seconds, delay)]
        )
    return changed
