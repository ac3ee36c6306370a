"""Creating, replacing and deleting workflows.

A workflow is saved whole. Its Node and Connection rows are rewritten from the document, and
when the graph or settings differ from the current version a new immutable WorkflowVersion
snapshot is written with ``version`` + 1 (executions reference snapshots, never the rows).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from executions.engine.retry import retry_policy
from executions.models import Connection, Node, Workflow, WorkflowVersion
from executions.states import Priority
from executions.triggers.schedules import schedule_remove, schedule_sync

# The parts of a workflow that are neither graph nor settings (trigger secrets).
_NOT_VERSIONED = ("webhook_token",)


def workflow_document(data: dict[str, Any]) -> dict[str, Any]:
    """The normalized snapshot document of validated workflow data (defaults filled in)."""
    return {
        "name": data["name"],
        "description": data.get("description", ""),
        "is_active": data.get("is_active", True),
        "timeout_seconds": data.get("timeout_seconds", 3600),
        "schedule": data.get("schedule"),
        "webhook_enabled": data.get("webhook_enabled", False),
        "priority": data.get("priority", Priority.NORMAL),
        "nodes": [
            {
                "key": n["key"],
                "type": n["type"],
                "name": n.get("name", ""),
                "config": n.get("config") or {},
                "retry": retry_policy(n.get("retry")),
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
    ):
        setattr(workflow, field, doc[field])
    workflow.priority = doc.get("priority", Priority.NORMAL)
    if workflow.webhook_enabled and not workflow.webhook_token:
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


@transaction.atomic
def workflow_delete(*, workflow: Workflow) -> None:
    pk = workflow.pk
    workflow.delete()
    workflow.pk = pk  # delete() clears the pk; the hook finds the schedule by it
    _after_delete(workflow)


def _after_save(workflow: Workflow) -> None:
    """Hook for triggers that live outside the workflow rows (schedules)."""
    schedule_sync(workflow=workflow)


def _after_delete(workflow: Workflow) -> None:
    """Hook for triggers that live outside the workflow rows (schedules)."""
    schedule_remove(workflow_id=workflow.pk)
