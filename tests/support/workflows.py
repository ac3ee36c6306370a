"""Building workflows, running them through the real worker and waiting for them to finish."""

from __future__ import annotations

import time
from typing import Any

from executions.api.serializers import WorkflowInputSerializer
from executions.models import Execution
from executions.services.executions import execution_create
from executions.services.workflows import workflow_create
from executions.states import EXECUTION_TERMINAL


def node(key: str, type: str = "noop", **extra: Any) -> dict[str, Any]:
    return {"key": key, "type": type, **extra}


def edge(
    source: str, target: str, type: str = "success", branch: str | None = None
) -> dict[str, Any]:
    doc = {"source": source, "target": target, "type": type}
    if branch is not None:
        doc["branch"] = branch
    return doc


def workflow_doc(nodes: list[dict], connections: list[dict] | None = None, **extra: Any) -> dict:
    return {
        "name": extra.pop("name", "test workflow"),
        "nodes": nodes,
        "connections": connections or [],
        **extra,
    }


def make_workflow(owner, nodes: list[dict], connections: list[dict] | None = None, **extra: Any):
    """Create a workflow through the same validation the API uses."""
    serializer = WorkflowInputSerializer(data=workflow_doc(nodes, connections, **extra))
    serializer.is_valid(raise_exception=True)
    return workflow_create(owner=owner, data=serializer.validated_data)


def wait_for(execution_id, timeout: float = 60.0, statuses=EXECUTION_TERMINAL) -> Execution:
    deadline = time.monotonic() + timeout
    while True:
        execution = Execution.objects.get(id=execution_id)
        if execution.status in statuses:
            return execution
        if time.monotonic() > deadline:
            runs = list(execution.node_runs.values_list("node", "status", "attempts"))
            raise AssertionError(
                f"execution {execution_id} still {execution.status} after {timeout}s: {runs}"
            )
        time.sleep(0.05)


def run(workflow, input: Any = None, timeout: float = 60.0) -> Execution:
    """Start ``workflow`` with ``input`` (``{}`` when None) and wait until it has finished."""
    execution, created = execution_create(
        workflow=workflow, input=input if input is not None else {}
    )
    assert created
    return wait_for(execution.id, timeout)


def wait_all(ids, timeout: float = 120.0) -> list[Execution]:
    deadline = time.monotonic() + timeout
    ids = list(ids)
    while True:
        done = Execution.objects.filter(id__in=ids, status__in=EXECUTION_TERMINAL).count()
        if done == len(ids):
            return list(Execution.objects.filter(id__in=ids))
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(ids) - done} of {len(ids)} executions unfinished after {timeout}s"
            )
        time.sleep(0.1)


def runs_by_node(execution: Execution) -> dict[str, Any]:
    return {r.node: r for r in execution.node_runs.all()}


def end_hop(
    execution,
    node: str,
    *,
    output=None,
    status: str = "succeeded",
    error=None,
    successors=(),
    joins=(),
    pure: bool = True,
    task_id: str | None = None,
):
    """One end-of-hop statement of the store, as a worker's task body would run it: the first
    attempt of ``node`` ends (from ``queued`` when ``pure``, else from its claimed ``running``),
    queueing ``successors`` ((node, task id) pairs) and counting ``joins`` down. Returns the
    store's (ended, execution status, queued, {join: left})."""
    from django.utils import timezone

    from executions import store

    now = timezone.now()
    start = store.PureStart(started_at=now, task_id=task_id or f"t-{node}", not_before=now)
    return store.node_run_end_and_queue(  # without the queued runs' ids
        execution_id=execution.id,
        node=node,
        attempt=1,
        status=status,
        output=output,
        branch=None,
        error=error,
        now=now,
        successors=list(successors),
        joins=list(joins),
        pure=start if pure else None,
    )[:4]
