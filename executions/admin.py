from __future__ import annotations

import uuid

from django.contrib import admin, messages
from django.db.models import F
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from executions.models import (
    Connection,
    Execution,
    Node,
    NodeRun,
    ScheduleSlot,
    Workflow,
    WorkflowVersion,
)
from executions.services.executions import Conflict, execution_cancel, execution_retry
from executions.services.workflows import WorkflowHasActiveExecutions, workflow_delete
from executions.states import EXECUTION_ACTIVE
from monitoring.graphs import STATUS_COLOURS, graph_svg, timeline_svg


def _inline_svg(svg: str) -> SafeString:
    # Inline in the HTML page: the XML declaration belongs to standalone files only. The SVG
    # is built by monitoring.graphs, which escapes every text and attribute taken from data.
    if svg.startswith("<?xml"):
        svg = svg.split("?>", 1)[1].lstrip()
    return mark_safe(svg)  # noqa: S308


def status_badge(status: str) -> str:
    colour = STATUS_COLOURS.get(status, STATUS_COLOURS["none"])
    return format_html(
        '<span style="background:{};border:1px solid #9ca3af;border-radius:8px;'
        'padding:1px 8px;white-space:nowrap;color:#111827">{}</span>',
        colour,
        status,
    )


class NodeInline(admin.TabularInline):
    model = Node
    extra = 0
    fields = ["position", "key", "type", "name", "config", "retry", "timeout_seconds"]
    readonly_fields = fields
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False


class ConnectionInline(admin.TabularInline):
    model = Connection
    fk_name = "workflow"
    extra = 0
    fields = ["position", "source", "target", "type", "branch"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "owner",
        "version",
        "is_active",
        "webhook_enabled",
        "created_at",
        "updated_at",
    ]
    list_filter = ["is_active", "webhook_enabled", "owner"]
    search_fields = ["name", "description", "id", "nodes__key"]
    readonly_fields = ["id", "version", "created_at", "updated_at", "webhook_token"]
    inlines = [NodeInline, ConnectionInline]

    # Deleting goes through workflow_delete, as in the API: not while executions are active,
    # and finished executions keep their history.
    def has_delete_permission(self, request, obj=None):
        if obj is not None and obj.executions.filter(status__in=EXECUTION_ACTIVE).exists():
            return False
        return super().has_delete_permission(request, obj)

    def delete_model(self, request, obj):
        workflow_delete(workflow=obj)

    def delete_queryset(self, request, queryset):
        for workflow in queryset:
            try:
                workflow_delete(workflow=workflow)
            except WorkflowHasActiveExecutions as exc:
                self.message_user(request, str(exc), messages.WARNING)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The edit page, with a picture of the current version's graph."""
        extra_context = dict(extra_context or {})
        doc = (
            WorkflowVersion.objects.filter(workflow_id=object_id, workflow__version=F("version"))
            .values_list("graph", flat=True)
            .first()
            if _is_uuid(object_id)
            else None
        )
        if doc is not None:
            extra_context["graph_svg"] = _inline_svg(graph_svg(doc))
        return super().change_view(request, object_id, form_url, extra_context)


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(admin.ModelAdmin):
    list_display = ["workflow", "version", "created_at"]
    search_fields = ["workflow__name", "workflow__id"]
    readonly_fields = ["workflow", "version", "graph", "created_at"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class NodeRunInline(admin.TabularInline):
    model = NodeRun
    extra = 0
    fields = [
        "node",
        "node_type",
        "status",
        "attempts",
        "reassignments",
        "queued_at",
        "started_at",
        "finished_at",
        "duration",
        "error",
    ]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="duration (s)")
    def duration(self, obj: NodeRun):
        d = obj.duration_seconds
        return None if d is None else round(d, 3)


@admin.action(description="Cancel selected executions")
def cancel_executions(modeladmin, request, queryset):
    done = 0
    for execution in queryset:
        try:
            execution_cancel(
                execution=execution, reason=f"cancelled in the admin by {request.user}"
            )
            done += 1
        except Conflict:
            pass
    modeladmin.message_user(request, f"Cancelled {done} execution(s).", messages.SUCCESS)


@admin.action(description="Retry selected executions from their failed nodes")
def retry_executions(modeladmin, request, queryset):
    done = 0
    for execution in queryset:
        try:
            execution_retry(execution=execution, mode="from_failed")
            done += 1
        except Conflict as exc:
            modeladmin.message_user(request, f"{execution.id}: {exc}", messages.WARNING)
    modeladmin.message_user(request, f"Started {done} retry execution(s).", messages.SUCCESS)


@admin.action(description="Retry selected executions on the workflow's latest version")
def retry_executions_latest(modeladmin, request, queryset):
    done = 0
    for execution in queryset:
        try:
            execution_retry(execution=execution, mode="from_failed", version="latest")
            done += 1
        except Conflict as exc:
            modeladmin.message_user(request, f"{execution.id}: {exc}", messages.WARNING)
    modeladmin.message_user(request, f"Started {done} retry execution(s).", messages.SUCCESS)


@admin.register(Execution)
class ExecutionAdmin(admin.ModelAdmin):
    list_display = ["id", "workflow", "coloured_status", "trigger", "created_at", "duration"]
    list_filter = ["status", "trigger", "workflow", "created_at"]
    search_fields = ["id", "workflow_name", "idempotency_key"]
    list_select_related = ["workflow"]
    actions = [cancel_executions, retry_executions, retry_executions_latest]
    inlines = [NodeRunInline]
    date_hierarchy = "created_at"

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    # Read-only: the engine alone changes executions (cancel and retry go through services).
    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="duration (s)")
    def duration(self, obj: Execution):
        if obj.started_at and obj.finished_at:
            return round((obj.finished_at - obj.started_at).total_seconds(), 3)
        if obj.started_at:  # still going: the time so far
            return format_html("{}…", round((timezone.now() - obj.started_at).total_seconds(), 1))
        return None

    @admin.display(description="status", ordering="status")
    def coloured_status(self, obj: Execution):
        return status_badge(obj.status)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The read-only page, with the graph coloured by node-run status and a timeline."""
        extra_context = dict(extra_context or {})
        execution = (
            Execution.objects.filter(pk=object_id).select_related("snapshot").first()
            if _is_uuid(object_id)
            else None
        )
        if execution is not None:
            runs = list(
                execution.node_runs.order_by("queued_at", "id").values(
                    "node", "status", "attempts", "queued_at", "started_at", "finished_at"
                )
            )
            by_node = {r["node"]: r for r in runs}
            extra_context["graph_svg"] = _inline_svg(graph_svg(execution.snapshot.graph, by_node))
            extra_context["timeline_svg"] = _inline_svg(
                timeline_svg(runs, origin=execution.created_at)
            )
            statuses = sorted({r["status"] for r in runs})
            extra_context["status_colours"] = [(s, STATUS_COLOURS.get(s)) for s in statuses]
        return super().change_view(request, object_id, form_url, extra_context)


@admin.register(ScheduleSlot)
class ScheduleSlotAdmin(admin.ModelAdmin):
    """What became of each cron slot of each schedule: started, buffered, skipped, missed."""

    list_display = ["slot", "workflow", "outcome", "trigger", "execution", "reason"]
    list_filter = ["outcome", "trigger", "workflow"]
    search_fields = ["workflow__name", "workflow__id", "execution__id"]
    list_select_related = ["workflow"]
    date_hierarchy = "slot"

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


from executions.credentials.models import Credential  # noqa: E402


@admin.register(Credential)
class CredentialAdmin(admin.ModelAdmin):
    """Names, kinds and owners only: the encrypted secret is neither shown nor editable here
    (credentials are written through /api/credentials/, which validates each kind)."""

    list_display = ["name", "kind", "owner", "created_at", "updated_at"]
    list_filter = ["kind"]
    search_fields = ["name", "owner__username"]
    fields = ["id", "name", "kind", "owner", "created_at", "updated_at"]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        # Deleting goes through the API, which refuses a credential that workflows still use.
        return False
