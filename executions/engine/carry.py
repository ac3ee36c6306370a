"""What a pure node's message may carry, so that its task need not read the run first.

When a hop's end statement queues a successor whose node type is pure, the successor's input
(the output just recorded) and what its task needs of the execution are known in the process
that sends its message. Carried in the message (``run=`` beside ``pure=True``), they spare the
successor's task its read: it runs the type at once, and its end statement is the
compare-and-set that matters (the run still ``queued`` in attempt 1, the execution active and
within its deadline). The database stays the truth: a message that carries nothing (sent by
recovery, an unpause, a wake, or too large to carry) takes the read, and a carried context that
no longer holds (the run ended, the execution stopped) makes the end statement record nothing.

Only what cannot change while the run is queued is carried: a run's input is written once, when
it is queued, and an execution's input, snapshot, depth, parent, concurrency key and workflow
never change.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from django.conf import settings

from executions.models import Execution, NodeRun, Workflow
from executions.states import ExecutionStatus, NodeRunStatus

_EXECUTION_FIELDS = ("input", "snapshot_id", "depth", "parent_node_run_id", "concurrency_key")


def payload(
    execution: Execution,
    run_id: int,
    input: Any,
    queued_at: datetime,
    input_bytes: int | None = None,
) -> dict | None:
    """The context of a successor just queued in attempt 1, or None when it does not fit in
    WECONNECT_CARRY_MAX_BYTES (or the execution at hand was loaded without a field of it:
    reading it now would cost what carrying saves). ``input_bytes``, the input's size as
    JSON when already measured, spares encoding an input that cannot fit."""
    limit = settings.WECONNECT_CARRY_MAX_BYTES
    loaded = execution.__dict__
    if (
        limit <= 0
        or (input_bytes is not None and input_bytes > limit)
        or any(f not in loaded for f in _EXECUTION_FIELDS)
        or not Execution.workflow.is_cached(execution)
    ):
        return None
    doc = {
        "id": run_id,
        "attempt": 1,
        "input": input,
        "queued_at": queued_at.isoformat(),
        "execution": {
            "input": execution.input,
            "snapshot_id": execution.snapshot_id,
            "depth": execution.depth,
            "parent_node_run_id": execution.parent_node_run_id,
            "concurrency_key": execution.concurrency_key,
            "workflow_id": str(execution.workflow.id),
            "owner_id": execution.workflow.owner_id,
        },
    }
    try:
        size = len(json.dumps(doc, separators=(",", ":")))
    except (TypeError, ValueError):
        return None
    return doc if size <= limit else None


def run_from(execution_id: str, node: str, doc: dict, now: datetime) -> NodeRun:
    """The in-memory run a task body works on, from a carried context: still ``queued``, as
    the attempt it would be (``attempts`` counted, ``started_at`` now)."""
    ex = doc["execution"]
    execution = Execution(
        id=uuid.UUID(str(execution_id)),
        status=ExecutionStatus.RUNNING,
        input=ex["input"],
        snapshot_id=ex["snapshot_id"],
        depth=ex["depth"],
        parent_node_run_id=ex["parent_node_run_id"],
        concurrency_key=ex["concurrency_key"],
        workflow=Workflow(id=uuid.UUID(ex["workflow_id"]), owner_id=ex["owner_id"]),
    )
    return NodeRun(
        id=doc["id"],
        execution=execution,
        node=node,
        status=NodeRunStatus.QUEUED,
        attempts=doc["attempt"],
        input=doc["input"],
        state=None,
        retry_delays=[],
        attempt_log=[],
        reassignments=0,
        queued_at=datetime.fromisoformat(doc["queued_at"]),
        started_at=now,
        task_id=None,
    )
