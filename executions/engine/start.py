"""Starting an execution: its row and its node runs in one transaction, the start nodes
dispatched after commit, and the rules an execution is started under."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from executions import store
from executions.engine import dispatch
from executions.engine.completion import execution_complete_if_done, execution_terminate
from executions.engine.snapshots import graph_for, version_for
from executions.errors import Conflict
from executions.graph import Graph, Outcome, find_cycle, initial_plan
from executions.models import Execution, NodeRun, Workflow, WorkflowVersion
from executions.nodes.base import NonRetryableError
from executions.nodes.templating import TemplateProblem, compile_template, is_template, to_json
from executions.states import (
    EXECUTION_ACTIVE,
    EXECUTION_HOLDING_SLOT,
    EXECUTION_UNFINISHED,
    ExecutionStatus,
    Trigger,
)
from weconnect import tracing

log = logging.getLogger("weconnect.engine")
MAX_KEY_LENGTH = 255


class ConcurrencyKeyError(ValueError):
    """The workflow's concurrency key cannot be rendered over this input (answered as 400)."""


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
    item_index: int | None = None,
    depth: int = 0,
    scheduled_for=None,
    deferred: bool = False,
    not_before=None,
    debounce: dict[str, Any] | None = None,
    priority: str | None = None,
) -> tuple[Execution, bool]:
    """Create an execution and its node runs in one transaction and dispatch the start nodes
    after commit. Returns (execution, created); with an ``idempotency_key`` already used for
    this workflow (or a ``scheduled_for`` slot already run) it returns the existing execution
    and creates nothing. Raises Conflict for an inactive workflow (before anything else, the
    idempotency lookup included).

    A ``deferred`` execution is written without node runs and started later by
    :func:`execution_start_deferred` (not before ``not_before``); ``debounce`` holds its
    window fields (``debounce_key``, ``debounce_until``, ``debounce_open``). A conflict on an
    open debounce window raises IntegrityError for the caller to join that window instead.

    ``priority`` defaults to the parent execution's for a sub-workflow, else to the
    workflow's own setting."""
    if not workflow.is_active:
        raise Conflict("workflow is inactive")
    existing = _existing_execution(workflow, idempotency_key, scheduled_for)
    if existing:
        return existing, False
    if snapshot is None:
        snapshot = version_for(workflow.pk, workflow.version)
    graph = graph_for(snapshot.id, snapshot)
    cycle = find_cycle(graph.nodes, [(e.source, e.target) for e in graph.edges])
    if cycle:  # saved workflows are acyclic; this guards snapshots written any other way
        raise Conflict("cycle: " + " -> ".join(cycle))
    if priority is None:
        priority = _default_priority(workflow, parent_node_run_id)
    limit = snapshot.graph.get("concurrency") if not deferred else None
    key = concurrency_key(limit, input) if limit else None
    victims: list = []
    now = timezone.now()
    timeout = int(snapshot.graph.get("timeout_seconds", workflow.timeout_seconds))
    if deferred:
        # Starting resets the deadline; until then it bounds the wait: the window, or (for a
        # run buffered behind another) the other run's own deadline.
        deadline = (not_before or now) + timedelta(seconds=2 * timeout)
    else:
        deadline = now + timedelta(seconds=timeout)
    try:
        with transaction.atomic():
            if parent_node_run_id is not None:
                _lock_active_parent(parent_node_run_id)
            if limit:
                # Before the row is written: its created_at then gives its place in line, and
                # its clock starts when it holds the lock.
                _lock_slots(workflow.pk, key)
                now = timezone.now()
                deadline = now + timedelta(seconds=timeout)
            execution = Execution.objects.create(
                workflow=workflow,
                workflow_name=workflow.name,
                owner_id=workflow.owner_id,
                snapshot=snapshot,
                workflow_version=snapshot.version,
                trigger=trigger,
                priority=priority,
                input=input,
                idempotency_key=idempotency_key,
                retry_of=retry_of,
                parent_node_run_id=parent_node_run_id,
                item_index=item_index,
                depth=depth,
                deadline_at=deadline,
                scheduled_for=scheduled_for,
                deferred=deferred,
                not_before=not_before,
                **(debounce or {}),
                concurrency_key=key,
                trace_context=tracing.execution_trace(workflow_id=workflow.pk, trigger=trigger),
            )
            admitted = True
            if limit:
                admitted, victims = _admission(execution, limit, key, now)
            if not deferred and admitted:
                _execution_begin(execution, graph, reuse or [], input, now)
    except IntegrityError:
        existing = _existing_execution(workflow, idempotency_key, scheduled_for)
        if existing is None:
            raise
        # A concurrent request with the same key (or slot) committed first: answer with its
        # execution.
        return existing, False
    for victim in victims:  # cancel_in_progress: the newer execution takes the slot
        execution_terminate(
            execution_id=victim,
            status=ExecutionStatus.CANCELLED,
            error={
                "message": f"cancelled by the newer execution {execution.id} "
                "(concurrency strategy cancel_in_progress)",
                "type": "Cancelled",
            },
        )
    log.info(
        "execution created",
        extra={
            "execution_id": str(execution.id),
            "workflow_id": str(workflow.id),
            "trigger": trigger,
            "deferred": deferred,
        },
    )
    return execution, True


def _existing_execution(workflow: Workflow, idempotency_key, scheduled_for) -> Execution | None:
    if idempotency_key:
        found = Execution.objects.filter(workflow=workflow, idempotency_key=idempotency_key).first()
        if found:
            return found
    if scheduled_for is not None:
        return Execution.objects.filter(workflow=workflow, scheduled_for=scheduled_for).first()
    return None


def _keep_node_runs(execution: Execution, rows: list[NodeRun]) -> None:
    """Keep the node runs just written on the execution, as a prefetch would, so that the
    answer to the trigger is built from the rows as written, without reading them back."""
    runs = NodeRun.objects.filter(execution=execution).order_by("id")
    runs._result_cache = sorted(rows, key=lambda r: r.id)
    runs._prefetch_done = True
    execution._prefetched_objects_cache = {"node_runs": runs}


def _execution_begin(
    execution: Execution, graph: Graph, reuse: list[NodeRun], input: Any, now
) -> None:
    """Write the node runs of a new execution (reused successes, queued start nodes, skips)
    and dispatch the start nodes after commit. Runs inside the creating transaction."""
    reused = {r.node: r for r in reuse if r.node in graph.nodes}
    queue, skip = initial_plan(
        graph, {k: Outcome(r.status, r.branch, r.output) for k, r in reused.items()}, input
    )
    task_ids = {k: dispatch.new_task_id() for k in graph.nodes if k in queue}
    rows = store.node_runs_create(
        execution=execution,
        graph=graph,
        reused=reused,
        queue=queue,
        skip=skip,
        task_ids=task_ids,
        now=now,
    )
    if task_ids:
        _keep_node_runs(execution, rows)
        dispatch.send_on_commit(
            [
                dispatch.for_node(str(execution.id), graph, k, t, priority=execution.priority)
                for k, t in task_ids.items()
            ]
        )
    else:
        execution_complete_if_done(execution, graph, now)
    _schedule_deadline_check(execution)


def execution_start_deferred(*, execution_id, now=None) -> str:
    """Start a deferred execution when it is due: ``started``, ``waiting`` (its window is
    still open, or the run it is buffered behind is still active) or ``gone`` (started,
    cancelled or deleted already)."""
    now = now or timezone.now()
    with transaction.atomic():
        row = (
            Execution.objects.filter(id=execution_id, deferred=True, status=ExecutionStatus.PENDING)
            .values("workflow_id", "trigger", "not_before")
            .first()
        )
        if row is None:
            return "gone"
        buffered = row["trigger"] == Trigger.SCHEDULE and row["not_before"] is None
        if buffered:
            # The same lock order as a schedule fire (workflow row, then execution), so a
            # fire and this start agree on which run is active.
            Workflow.objects.select_for_update().filter(id=row["workflow_id"]).first()
        # The lock a debounce trigger takes to replace the input: the input read below is the
        # last one, and no trigger joins after the window has closed here.
        execution = (
            # Only the execution's row: the workflow may be gone (a nullable join, which
            # FOR UPDATE cannot lock).
            Execution.objects.select_for_update(of=("self",))
            .select_related("snapshot", "workflow")
            .filter(id=execution_id, deferred=True, status=ExecutionStatus.PENDING)
            .first()
        )
        if execution is None:
            return "gone"
        if execution.not_before is not None and execution.not_before > now:
            return "waiting"
        if buffered and schedule_run_active(workflow_id=execution.workflow_id):
            return "waiting"
        timeout = int(
            execution.snapshot.graph.get("timeout_seconds", execution.workflow.timeout_seconds)
        )
        execution.deadline_at = now + timedelta(seconds=timeout)
        # Not a status change: the execution stays pending until its first node run starts.
        Execution.objects.filter(id=execution.id).update(
            deferred=False, debounce_open=False, deadline_at=execution.deadline_at
        )
        _execution_begin(execution, graph_for(execution.snapshot_id), [], execution.input, now)
    log.info("deferred execution started", extra={"execution_id": str(execution_id)})
    return "started"


def schedule_run_active(*, workflow_id) -> bool:
    """Whether a started scheduled run of the workflow is still active (overlap policies)."""
    return Execution.objects.filter(
        workflow_id=workflow_id,
        trigger=Trigger.SCHEDULE,
        status__in=EXECUTION_ACTIVE,
        deferred=False,
    ).exists()


def deferred_start_due(*, now=None, batch: int = 500) -> int:
    """Start the deferred executions that are due (a debounce window that ended, a buffered
    scheduled run whose predecessor finished): the backstop for a lost countdown."""
    now = now or timezone.now()
    ids = list(
        Execution.objects.filter(deferred=True, status=ExecutionStatus.PENDING)
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
        .order_by("created_at")
        .values_list("id", flat=True)[:batch]
    )
    return sum(1 for i in ids if execution_start_deferred(execution_id=i, now=now) == "started")


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


# --- concurrency limits -------------------------------------------------------------------


def concurrency_key(limit: dict[str, Any], input: Any) -> str:
    """The key an execution counts against: the rendered ``key`` template ("" when the limit
    is per workflow). Raises ConcurrencyKeyError when it cannot be rendered."""
    source = limit.get("key") or ""
    if is_template(source):
        try:
            value = to_json(
                compile_template(source).evaluate({"input": input, "execution_input": input}),
                "concurrency.key",
            )
        except (TemplateProblem, NonRetryableError) as exc:
            raise ConcurrencyKeyError(str(exc)) from None
        except Exception as exc:  # Jinja raises many kinds on a bad input
            raise ConcurrencyKeyError(f"{type(exc).__name__}: {exc}") from None
    else:
        value = source
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if len(text) > MAX_KEY_LENGTH:
        text = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return text


def _lock_slots(workflow_id, key: str) -> None:
    """Serialize admission and release for one (workflow, key) across every process: a
    transaction-level advisory lock (SQLite serializes its writers by itself)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                [f"weconnect.concurrency:{workflow_id}:{key}"],
            )


def _holding(workflow_id, key: str, exclude=None):
    qs = Execution.objects.filter(
        workflow_id=workflow_id, concurrency_key=key, status__in=EXECUTION_HOLDING_SLOT
    )
    return qs.exclude(id=exclude) if exclude is not None else qs


def _admission(execution: Execution, limit: dict[str, Any], key: str, now) -> tuple[bool, list]:
    """Decide, under the (workflow, key) lock, whether a new execution starts now: returns
    (start now, executions to cancel after commit). Over the limit it waits in line as
    ``queued`` (strategy queue), is refused at once (cancel_newest), or the oldest running
    ones make room (cancel_in_progress). The caller holds the (workflow, key) lock."""
    strategy = limit.get("strategy") or "queue"
    size = int(limit["limit"])
    holding = list(
        _holding(execution.workflow_id, key, exclude=execution.id)
        .order_by("created_at", "id")
        .values_list("id", flat=True)
    )
    if strategy == "cancel_in_progress":
        return True, holding[: max(0, len(holding) - size + 1)]
    if strategy == "cancel_newest":
        if len(holding) < size:
            return True, []
        store.execution_end(
            execution_id=execution.id,
            status=ExecutionStatus.CANCELLED,
            error={
                "message": f"refused: {len(holding)} executions already hold the concurrency "
                f"limit of {size} for key {key!r} (strategy cancel_newest)",
                "type": "ConcurrencyLimitReached",
                "key": key,
                "limit": size,
            },
            now=now,
        )
        return False, []
    in_line = Execution.objects.filter(
        workflow_id=execution.workflow_id, concurrency_key=key, status=ExecutionStatus.QUEUED
    ).exists()
    if len(holding) < size and not in_line:
        return True, []
    # The workflow's timeout counts from admission; the wait in line is bounded by the stale
    # limit (then the recovery pass times it out).
    store.execution_queue(
        execution_id=execution.id,
        deadline_at=now + timedelta(seconds=settings.WECONNECT_STALE_AFTER),
    )
    return False, []


def concurrency_admit(*, workflow_id, key: str, now=None) -> int:
    """Admit the oldest queued executions of (workflow, key) into the free slots and start
    them; returns how many. Called after every terminal transition of an execution under a
    limit, and by the recovery pass (an admission lost to a crash)."""
    now = now or timezone.now()
    admitted = 0
    with transaction.atomic():
        _lock_slots(workflow_id, key)
        line = list(
            Execution.objects.select_related("snapshot", "workflow")
            .filter(workflow_id=workflow_id, concurrency_key=key, status=ExecutionStatus.QUEUED)
            .order_by("created_at", "id")[:1000]
        )
        if not line:
            return 0
        limit = line[-1].snapshot.graph.get("concurrency") or {"limit": len(line)}
        free = int(limit["limit"]) - _holding(workflow_id, key).count()
        for execution in line[: max(0, free)]:
            timeout = int(execution.snapshot.graph.get("timeout_seconds", 3600))
            deadline = now + timedelta(seconds=timeout)
            if not store.execution_admit(execution_id=execution.id, deadline_at=deadline):
                continue
            execution.refresh_from_db(fields=["status", "deadline_at"])
            _execution_begin(execution, graph_for(execution.snapshot_id), [], execution.input, now)
            admitted += 1
    if admitted:
        log.info(
            "queued executions admitted",
            extra={"workflow_id": str(workflow_id), "key": key, "admitted": admitted},
        )
    return admitted


def concurrency_release(*, execution_id) -> int:
    """An execution under a limit has finished: admit who is next in its line."""
    row = (
        Execution.objects.filter(id=execution_id, concurrency_key__isnull=False)
        .values_list("workflow_id", "concurrency_key")
        .first()
    )
    if row is None or row[0] is None:
        return 0
    return concurrency_admit(workflow_id=row[0], key=row[1])


def concurrency_lines(*, batch: int = 200) -> list[tuple[Any, str]]:
    """The (workflow, key) pairs that have executions waiting in line."""
    return list(
        Execution.objects.filter(status=ExecutionStatus.QUEUED, workflow_id__isnull=False)
        .values_list("workflow_id", "concurrency_key")
        .distinct()[:batch]
    )


def child_starter(*, node_run_id: int, depth: int):
    """The capability a node run is given to start child executions: a sub-workflow (one
    per run) or the item ``item_index`` of a for_each (one per run and index). The child
    points back at the run, one level deeper, and is created at most once: its idempotency
    key is derived from the run (and the index), so a run that died after starting it finds
    the same child again."""

    def start_child(*, workflow: Workflow, input: Any, item_index: int | None = None) -> Execution:
        if item_index is None:
            trigger, key = Trigger.SUB_WORKFLOW, f"sub_workflow:{node_run_id}"
        else:
            trigger, key = Trigger.FOR_EACH, f"for_each:{node_run_id}:{item_index}"
        child, _ = execution_create(
            workflow=workflow,
            input=input,
            trigger=trigger,
            idempotency_key=key,
            parent_node_run_id=node_run_id,
            item_index=item_index,
            depth=depth + 1,
        )
        return child

    return start_child


def _lock_active_parent(parent_node_run_id: int) -> None:
    """Hold the parent execution's row while its child is created, and refuse when the parent
    has ended: a cancel or time-out of the parent either commits first (and no child starts)
    or waits for this child, which its sweep of the children then stops."""
    status = (
        Execution.objects.select_for_update(no_key=True)
        .filter(id__in=NodeRun.objects.filter(id=parent_node_run_id).values("execution_id"))
        .values_list("status", flat=True)
        .first()
    )
    if status is not None and status not in EXECUTION_UNFINISHED:
        raise Conflict(f"the parent execution has ended ({status}): no child is started")


def _schedule_deadline_check(execution: Execution) -> None:
    """A deadline close enough for a countdown gets a precise check; others are caught by the
    recovery task's deadline scan."""
    seconds = (execution.deadline_at - timezone.now()).total_seconds()
    if seconds <= settings.WECONNECT_MAX_ETA_SECONDS:
        transaction.on_commit(
            lambda: dispatch.send_deadline_check(execution.id, max(0.0, seconds) + 0.2)
        )
