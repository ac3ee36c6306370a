"""Celery tasks: thin interfaces to the engine. They take ids and let the database decide."""

from __future__ import annotations

from celery import shared_task

from executions.engine.completion import execution_time_out_if_due
from executions.engine.execute import node_run_execute
from executions.engine.recovery import recovery_run
from executions.triggers.schedules import run_scheduled  # noqa: F401  (weconnect.run_scheduled)


@shared_task(
    name="weconnect.run_node",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    max_retries=0,
)
def run_node(self, execution_id: str, node: str) -> str:
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    return node_run_execute(
        execution_id=execution_id, node=node, task_id=self.request.id, redelivered=redelivered
    )


@shared_task(name="weconnect.recovery", ignore_result=True, acks_late=True)
def recovery() -> dict:
    return recovery_run().as_dict()


@shared_task(name="weconnect.check_deadline", ignore_result=True, acks_late=True)
def check_deadline(execution_id: str) -> bool:
    return execution_time_out_if_due(execution_id=execution_id)
