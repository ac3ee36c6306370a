"""Read-side queries."""

from __future__ import annotations

from django.db.models import OuterRef, Prefetch, Q, QuerySet, Subquery
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Substr

from executions.models import Execution, NodeRun, Workflow, WorkflowVersion
from executions.states import ExecutionStatus


def workflow_list(*, user) -> QuerySet[Workflow]:
    graph = WorkflowVersion.objects.filter(
        workflow=OuterRef("pk"), version=OuterRef("version")
    ).values("graph")[:1]
    qs = Workflow.objects.all() if user.is_superuser else Workflow.objects.filter(owner=user)
    return qs.annotate(graph=Subquery(graph)).order_by("-created_at")


def execution_list(*, user) -> QuerySet[Execution]:
    qs = Execution.objects.all() if user.is_superuser else Execution.objects.filter(owner=user)
    return (
        qs.select_related("workflow")
        .prefetch_related(Prefetch("node_runs", queryset=NodeRun.objects.order_by("id")))
        .order_by("-created_at")
    )


# The list of executions carries summaries: the input, output and error documents (up to the
# output limit each, 1 MiB by default) and the node runs stay in the database; only the error's
# message is read, cut short, inside PostgreSQL.
SUMMARY_MESSAGE_CHARS = 500


def execution_summary_list(*, user) -> QuerySet[Execution]:
    qs = Execution.objects.all() if user.is_superuser else Execution.objects.filter(owner=user)
    return (
        qs.defer("input", "output", "error")
        .annotate(
            error_message=Substr(KeyTextTransform("message", "error"), 1, SUMMARY_MESSAGE_CHARS)
        )
        .order_by("-created_at")
    )


def execution_trace_context(execution_id) -> dict[str, str] | None:
    """The trace context stored on an execution (read only when tracing is on)."""
    return Execution.objects.filter(id=execution_id).values_list("trace_context", flat=True).first()


def queue_position(execution) -> int | None:
    """A queued execution's place in its line: 1 + how many of the same workflow and key
    arrived before it and still wait."""
    if execution.status != ExecutionStatus.QUEUED:
        return None
    ahead = Execution.objects.filter(
        workflow_id=execution.workflow_id,
        concurrency_key=execution.concurrency_key,
        status=ExecutionStatus.QUEUED,
    ).filter(
        Q(created_at__lt=execution.created_at)
        | Q(created_at=execution.created_at, id__lt=execution.id)
    )
    return ahead.count() + 1
