"""Celery tasks: thin interfaces to the engine. They take ids and let the database decide."""

from __future__ import annotations

from celery import shared_task

from executions import counters
from executions.engine.completion import execution_time_out_if_due
from executions.engine.execute import node_run_execute
from executions.engine.recovery import recovery_run
from executions.engine.start import concurrency_release as concurrency_release_after
from executions.engine.watchdog import run_if_due as _recovery_fallback  # noqa: F401  (worker_ready)
from executions.events.services import event_retention_sweep
from executions.selectors import execution_trace_context
from executions.services.bulk import TASK_NAME as BULK_TASK_NAME
from executions.services.bulk import bulk_operation_run
from executions.triggers.debounce import start_deferred  # noqa: F401  (weconnect.start_deferred)
from executions.triggers.schedules import run_scheduled  # noqa: F401  (weconnect.run_scheduled)
from weconnect import tracing


@shared_task(
    name="weconnect.run_node",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    max_retries=0,
)
def run_node(
    self, execution_id: str, node: str, pure: bool = False, run: dict | None = None
) -> str:
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    parent = execution_trace_context(execution_id) if tracing.enabled() else None
    with tracing.node_run_span(execution_id=execution_id, node=node, parent=parent) as span:
        outcome = node_run_execute(
            execution_id=execution_id,
            node=node,
            task_id=self.request.id,
            redelivered=redelivered,
            pure=pure,
            carried=run,
        )
        tracing.node_run_outcome(span, outcome)
    return outcome


@shared_task(name="weconnect.recovery", ignore_result=True, acks_late=True)
def recovery() -> dict:
    report = recovery_run().as_dict()
    counters.record_recovery_ran()
    return report


@shared_task(name="weconnect.concurrency_release", ignore_result=True, acks_late=True)
def concurrency_release(execution_id: str) -> int:
    return concurrency_release_after(execution_id=execution_id)


@shared_task(name="weconnect.check_deadline", ignore_result=True, acks_late=True)
def check_deadline(execution_id: str) -> bool:
    return execution_time_out_if_due(execution_id=execution_id)


@shared_task(name="weconnect.event_retention", ignore_result=True, acks_late=True)
def event_retention() -> int:
    return event_retention_sweep()


@shared_task(name=BULK_TASK_NAME, ignore_result=True, acks_late=True)
def bulk_operation(operation_id: str) -> str:
    return bulk_operation_run(operation_id=operation_id)
