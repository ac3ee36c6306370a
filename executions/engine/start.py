"""Starting an execution: its row and its node runs in one transaction, the start nodes
dispatched after commit, and the rules an execution is started under."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from executions import store
from executions.engine import dispatch
from executions.engine.completion import execution_complete_if_done
from executions.engine.snapshots import graph_for
from executions.errors import Conflict
from executions.graph import Outcome, find_cycle, initial_plan
from executions.models import Execution, NodeRun, Workflow, WorkflowVersion
from executions.states import Trigger

log = logging.getLogger("weconnect.engine")


def execution_create(
    *,
    workflow: Workflow,
    input: Any,
    trigger: str = Trigger.API,
    idempotency_key: str | None = None,
    snapshot: WorkflowVersion | None = None,
    retry_of: Execution | None = None,
    reuse: list[NodeRun] | None = None,
    parent_node_run_id: int | None = None,
    depth: int = 0,
    priority: str | None = None,
) -> tuple[Execution, bool]:
    """Create an execution and its node runs in one transaction and dispatch the start nodes
    after commit. Returns (execution, created); with an ``idempotency_key`` already used for
    this workflow it returns the existing execution and creates nothing. Raises Conflict for
    an inactive workflow (before anything else, the idempotency lookup included).

    ``priority`` defaults to the parent execution's for a sub-workflow, else to the
    workflow's own setting."""
    if not workflow.is_active:
        raise Conflict("workflow is inactive")
    if idempotency_key:
        existing = Execution.objects.filter(
            workflow=workflow, idempotency_key=idempotency_key
        ).first()
        if existing:
            return existing, False
    if snapshot is None:
        snapshot = WorkflowVersion.objects.get(workflow=workflow, version=workflow.version)
    graph = graph_for(snapshot.id)
    cycle = find_cycle(graph.nodes, [(e.source, e.target) for e in graph.edges])
    if cycle:  # saved workflows are acyclic; this guards snapshots written any other way
        raise Conflict("cycle: " + " -> ".join(cycle))
    if priority is None:
        priority = _default_priority(workflow, parent_node_run_id)
    now = timezone.now()
    timeout = int(snapshot.graph.get("timeout_seconds", workflow.timeout_seconds))
    reused = {r.node: r for r in (reuse or []) if r.node in graph.nodes}
    queue, skip = initial_plan(
        graph, {k: Outcome(r.status, r.branch, r.output) for k, r in reused.items()}, input
    )
    try:
        with transaction.atomic():
            execution = Execution.objects.create(
                workflow=workflow,
                snapshot=snapshot,
                workflow_version=snapshot.version,
                trigger=trigger,
                priority=priority,
                input=input,
                idempotency_key=idempotency_key,
                retry_of=retry_of,
                parent_node_run_id=parent_node_run_id,
                depth=depth,
                deadline_at=now + timedelta(seconds=timeout),
            )
            task_ids = {k: dispatch.new_task_id() for k in graph.nodes if k in queue}
            store.node_runs_create(
                execution=execution,
                graph=graph,
                reused=reused,
                queue=queue,
                skip=skip,
                task_ids=task_ids,
                now=now,
            )
            if task_ids:
                dispatch.send_on_commit(
                    [
                        dispatch.Dispatch(
                            str(execution.id),
                            k,
                            t,
                            graph.nodes[k].timeout_seconds,
                            priority=priority,
                        )
                        for k, t in task_ids.items()
                    ]
                )
            else:
                execution_complete_if_done(execution, graph, now)
            _schedule_deadline_check(execution)
    except IntegrityError:
        if not idempotency_key:
            raise
        # A concurrent request with the same key committed first: answer with its execution.
        return Execution.objects.get(workflow=workflow, idempotency_key=idempotency_key), False
    log.info(
        "execution created",
        extra={
            "execution_id": str(execution.id),
            "workflow_id": str(workflow.id),
            "trigger": trigger,
        },
    )
    return execution, True


def _default_priority(workflow: Workflow, parent_node_run_id: int | None) -> str:
    if parent_node_run_id is not None:
        parent = (
            Execution.objects.filter(node_runs__id=parent_node_run_id)
            .values_list("priority", flat=True)
            .first()
        )
        if parent:
            return parent
    return workflow.priority


def child_starter(*, node_run_id: int, depth: int):
    """The capability a node run is given to start one child execution (a sub-workflow): the
    child points back at the run, one level deeper, and is created at most once per run."""

    def start_child(*, workflow: Workflow, input: Any) -> Execution:
        child, _ = execution_create(
            workflow=workflow,
            input=input,
            trigger=Trigger.SUB_WORKFLOW,
            idempotency_key=f"sub_workflow:{node_run_id}",
            parent_node_run_id=node_run_id,
            depth=depth + 1,
        )
        return child

    return start_child


def _schedule_deadline_check(execution: Execution) -> None:
    """A deadline close enough for a countdown gets a precise check; others are caught by the
    recovery task's deadline scan."""
    seconds = (execution.deadline_at - timezone.now()).total_seconds()
    if seconds <= settings.WECONNECT_MAX_ETA_SECONDS:
        transaction.on_commit(
            lambda: dispatch.send_deadline_check(execution.id, max(0.0, seconds) + 0.2)
        )
