from __future__ import annotations

from django.contrib import admin, messages

from executions.models import Connection, Execution, Node, NodeRun, Workflow, WorkflowVersion
from executions.services.executions import Conflict, execution_cancel, execution_retry


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
    list_display = ["name", "owner", "version", "is_active", "webhook_enabled", "created_at", "updated_at"]
    list_filter = ["is_active", "webhook_enabled", "owner"]
    search_fields = ["name", "description", "id", "nodes__key"]
    readonly_fields = ["id", "version", "created_at", "updated_at", "webhook_token"]
    inlines = [NodeInline, ConnectionInline]


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
        "node", "node_type", "status", "attempts", "reassignments", "queued_at", "started_at",
        "finished_at", "duration", "error",
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
            execution_cancel(execution=execution, reason=f"cancelled in the admin by {request.user}")
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
    list_display = ["id", "workflow", "status", "trigger", "created_at", "duration"]
    list_filter = ["status", "trigger", "workflow"]
    search_fields = ["id", "workflow__name", "idempotency_key"]
    list_select_related = ["workflow"]
    actions = [cancel_executions, retry_executions]
    inlines = [NodeRunInline]
    date_hierarchy = "created_at"

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return request.method in ("GET", "HEAD") and super().has_view_permission(request, obj)

    @admin.display(description="duration (s)")
    def duration(self, obj: Execution):
        if obj.started_at and obj.finished_at:
            return round((obj.finished_at - obj.started_at).total_seconds(), 3)
        return None


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
