"""Creating, replacing and deleting workflows.

A workflow is saved whole. Its Node and Connection rows are rewritten from the document, and
when the graph or settings differ from the current version a new immutable WorkflowVersion
snapshot is written with ``version`` + 1 (executions reference snapshots, never the rows).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Exists, OuterRef

from executions.engine.retry import retry_policy
from executions.errors import Conflict
from executions.events.triggers import event_triggers_sync
from executions.models import Connection, Execution, Node, Workflow, WorkflowVersion
from executions.services.executions import execution_terminate
from executions.states import EXECUTION_UNFINISHED, ExecutionStatus, Priority
from executions.triggers.schedules import schedule_remove, schedule_sync

# The parts of a workflow that are neither graph nor settings (trigger secrets).
_NOT_VERSIONED = ("webhook_token",)


def workflow_document(data: dict[str, Any]) -> dict[str, Any]:
    """The normalized snapshot document of validated workflow data (defaults filled in)."""
    doc = {
        "name": data["name"],
        "description": data.get("description", ""),
        "is_active": data.get("is_active", True),
        "timeout_seconds": data.get("timeout_seconds", 3600),
        "schedule": dict(data["schedule"]) if data.get("schedule") else None,
        "webhook_enabled": data.get("webhook_enabled", False),
        "webhook_respond": data.get("webhook_respond", "immediately"),
        "webhook_respond_timeout_seconds": data.get("webhook_respond_timeout_seconds", 10),
        "webhook_respond_node": data.get("webhook_respond_node"),
        "debounce": dict(data["debounce"]) if data.get("debounce") else None,
        "retry": retry_policy(data.get("retry")),
        "priority": data.get("priority", Priority.NORMAL),
        "nodes": [
            {
                "key": n["key"],
                "type": n["type"],
                "name": n.get("name", ""),
                "config": n.get("config") or {},
                # The policy in force for this node, resolved once: what GET shows is what runs.
                "retry": retry_policy(data.get("retry"), n.get("retry")),
                "timeout_seconds": n.get("timeout_seconds", 300),
                # Only when set, so documents of nodes without a limit stay as they were.
                **({"rate_limit": _rate_limit_ref(n["rate_limit"])} if n.get("rate_limit") else {}),
            }
            for n in data["nodes"]
        ],
        "connections": [
            {
                "source": c["source"],
                "target": c["target"],
                "type": c.get("type", "success"),
                "branch": c.get("branch") or None,
            }
            for c in data.get("connections", [])
        ],
    }
    # Only when set, so that the versions of workflows saved before these settings existed
    # stay equal to their documents.
    if data.get("concurrency"):
        c = data["concurrency"]
        doc["concurrency"] = {
            "limit": int(c["limit"]),
            "key": c.get("key") or "",
            "strategy": c.get("strategy") or "queue",
        }
    if data.get("events"):
        doc["events"] = list(data["events"])
    return doc


def _rate_limit_ref(ref: dict[str, Any]) -> dict[str, Any]:
    return {"name": ref["name"], "key": ref.get("key") or None}


def _write_rows(workflow: Workflow, doc: dict[str, Any]) -> None:
    workflow.nodes.all().delete()  # cascades to connections
    nodes = Node.objects.bulk_create(
        Node(
            workflow=workflow,
            key=n["key"],
            type=n["type"],
            name=n["name"],
            config=n["config"],
            retry=n["retry"],
            timeout_seconds=n["timeout_seconds"],
            rate_limit=n.get("rate_limit"),
            position=i,
        )
        for i, n in enumerate(doc["nodes"])
    )
    by_key = {n.key: n for n in nodes}
    Connection.objects.bulk_create(
        Connection(
            workflow=workflow,
            source=by_key[c["source"]],
            target=by_key[c["target"]],
            type=c["type"],
            branch=c["branch"],
            position=i,
        )
        for i, c in enumerate(doc["connections"])
    )


def _apply_settings(workflow: Workflow, doc: dict[str, Any]) -> None:
    for field in (
        "name",
        "description",
        "is_active",
        "timeout_seconds",
        "schedule",
        "webhook_enabled",
        "webhook_respond",
        "webhook_respond_timeout_seconds",
        "webhook_respond_node",
        "debounce",
    ):
        setattr(workflow, field, doc[field])
    workflow.priority = doc.get("priority", Priority.NORMAL)
    workflow.events = doc.get("events", [])
    workflow.concurrency = doc.get("concurrency")
    if not workflow.webhook_enabled:
        # Turning webhooks off forgets the token: enabling them again must take a new one
        # (POST .../webhook-token/), never bring back a token that was given out before.
        workflow.webhook_token = ""
    elif not workflow.webhook_token:
        workflow.webhook_token = Workflow.new_webhook_token()


@transaction.atomic
def workflow_create(*, owner, data: dict[str, Any]) -> Workflow:
    doc = workflow_document(data)
    workflow = Workflow(owner=owner, version=1)
    _apply_settings(workflow, doc)
    workflow.save()
    _write_rows(workflow, doc)
    WorkflowVersion.objects.create(workflow=workflow, version=1, graph=doc)
    _after_save(workflow)
    return workflow


@transaction.atomic
def workflow_replace(*, workflow: Workflow, data: dict[str, Any]) -> Workflow:
    """Replace the whole definition. The row lock serializes concurrent replaces so that each
    change gets its own version number."""
    workflow = Workflow.objects.select_for_update().get(pk=workflow.pk)
    doc = workflow_document(data)
    current = WorkflowVersion.objects.filter(workflow=workflow, version=workflow.version).first()
    _apply_settings(workflow, doc)
    if current is None or current.graph != doc:
        workflow.version += 1
        WorkflowVersion.objects.create(workflow=workflow, version=workflow.version, graph=doc)
        _write_rows(workflow, doc)
    workflow.save()
    _after_save(workflow)
    return workflow


class WorkflowHasActiveExecutions(Conflict):
    """The workflow still has pending or running executions (answered as 409)."""

    def __init__(self, workflow: Workflow, executions: list[dict[str, str]], total: int):
        self.executions = executions
        self.total = total
        super().__init__(
            f"workflow {workflow.name!r} has {total} active execution(s); cancel them first, "
            "or delete with ?cancel_active=true to cancel them"
        )


# The 409 answer names at most this many of the active executions (and counts them all).
ACTIVE_LISTED = 100


def workflow_delete(*, workflow: Workflow, cancel_active: bool = False) -> list[str]:
    """Delete a workflow. Refused with WorkflowHasActiveExecutions while executions are pending
    or running, unless ``cancel_active``: they are then cancelled first (their ids returned).

    Finished executions stay, with ``workflow`` null: each keeps the workflow's name, its
    owner and the snapshot it ran (the snapshots they use are kept, the others deleted)."""
    cancelled: list[str] = []
    if cancel_active:
        # Each cancel commits on its own (revokes and wake-ups are sent after its commit);
        # one that finishes first is simply no longer active.
        for execution_id in _active(workflow).values_list("id", flat=True):
            if execution_terminate(
                execution_id=execution_id,
                status=ExecutionStatus.CANCELLED,
                error={"message": "cancelled: its workflow was deleted", "type": "Cancelled"},
            ):
                cancelled.append(str(execution_id))
    with transaction.atomic():
        # The row lock: a concurrent execution_create inserts a row referencing this
        # workflow, which needs a key-share lock on it, so no execution can start between the
        # check below and the delete (it waits, then fails on the missing workflow).
        workflow = Workflow.objects.select_for_update().get(pk=workflow.pk)
        active = _active(workflow)
        listed = [
            {"id": str(pk), "status": status}
            for pk, status in active.order_by("created_at").values_list("id", "status")[
                :ACTIVE_LISTED
            ]
        ]
        if listed:
            total = len(listed) if len(listed) < ACTIVE_LISTED else active.count()
            raise WorkflowHasActiveExecutions(workflow, listed, max(total, len(listed)))
        WorkflowVersion.objects.filter(workflow=workflow).filter(
            ~Exists(Execution.objects.filter(snapshot=OuterRef("pk")))
        ).delete()
        pk = workflow.pk
        workflow.delete()
        workflow.pk = pk  # delete() clears the pk; the hook finds the schedule by it
        _after_delete(workflow)
    return cancelled


def _active(workflow: Workflow):
    return Execution.objects.filter(workflow=workflow, status__in=EXECUTION_UNFINISHED)


def _after_save(workflow: Workflow) -> None:
    """Hook for triggers that live outside the workflow rows (schedules)."""
    schedule_sync(workflow=workflow)
    event_triggers_sync(workflow=workflow)


def _after_delete(workflow: Workflow) -> None:
    """Hook for triggers that live outside the workflow rows (schedules)."""
    schedule_remove(workflow_id=workflow.pk)
