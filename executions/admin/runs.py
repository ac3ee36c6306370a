from __future__ import annotations

from django.contrib import admin, messages
from django.utils import timezone
from django.utils.html import format_html

from executions.admin.graphs import STATUS_COLOURS, graph_svg, timeline_svg
from executions.admin.inspect import inline_svg, is_uuid, status_badge
from executions.models import Execution, NodeRun
from executions.services.executions import Conflict, execution_cancel, execution_retry


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


@admin.register(Execution)
class ExecutionAdmin(admin.ModelAdmin):
    list_display = ["id", "workflow", "coloured_status", "trigger", "created_at", "duration"]
    list_filter = ["status", "trigger", "workflow", "created_at"]
    search_fields = ["id", "workflow__name", "idempotency_key"]
    list_select_related = ["workflow"]
    actions = [cancel_executions, retry_executions]
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
            if is_uuid(object_id)
            else None
        )
        if execution is not None:
            runs = list(
                execution.node_runs.order_by("queued_at", "id").values(
                    "node", "status", "attempts", "queued_at", "started_at", "finished_at"
                )
            )
            by_node = {r["node"]: r for r in runs}
            extra_context["graph_svg"] = inline_svg(graph_svg(execution.snapshot.graph, by_node))
            extra_context["timeline_svg"] = inline_svg(
                timeline_svg(runs, origin=execution.created_at)
            )
            statuses = sorted({r["status"] for r in runs})
            extra_context["status_colours"] = [(s, STATUS_COLOURS.get(s)) for s in statuses]
        return super().change_view(request, object_id, form_url, extra_context)
