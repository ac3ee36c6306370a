from __future__ import annotations

import uuid

from django import forms
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
    RateLimit,
    Workflow,
    WorkflowVersion,
)
from executions.services import rate_limits as rate_limit_services
from executions.services.executions import Conflict, execution_cancel, execution_retry
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
    fields = [
        "position",
        "key",
        "type",
        "name",
        "config",
        "retry",
        "timeout_seconds",
        "rate_limit",
    ]
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
        "priority",
        "webhook_enabled",
        "created_at",
        "updated_at",
    ]
    list_filter = ["is_active", "priority", "webhook_enabled", "owner"]
    search_fields = ["name", "description", "id", "nodes__key"]
    readonly_fields = ["id", "version", "created_at", "updated_at", "webhook_token"]
    inlines = [NodeInline, ConnectionInline]

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
        "waiting_for",
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
    list_display = [
        "id",
        "workflow",
        "coloured_status",
        "trigger",
        "priority",
        "created_at",
        "duration",
    ]
    list_filter = ["status", "trigger", "priority", "workflow", "created_at"]
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


class RateLimitForm(forms.ModelForm):
    class Meta:
        model = RateLimit
        fields = ["owner", "name", "limit", "period_seconds"]

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if not rate_limit_services.NAME_RE.match(name):
            raise forms.ValidationError(rate_limit_services.NAME_RULE)
        old = self.instance
        if old.pk and old.name != name:
            used = rate_limit_services.rate_limit_used_by(owner_id=old.owner_id, name=old.name)
            if used:
                names = ", ".join(w["name"] for w in used)
                raise forms.ValidationError(
                    f"workflows still use {old.name!r} ({names}); it cannot be renamed"
                )
        return name

    def clean_limit(self) -> int:
        value = self.cleaned_data["limit"]
        if not 1 <= value <= rate_limit_services.MAX_LIMIT:
            raise forms.ValidationError(f"must be 1 to {rate_limit_services.MAX_LIMIT}")
        return value

    def clean_period_seconds(self) -> int:
        value = self.cleaned_data["period_seconds"]
        if not 1 <= value <= rate_limit_services.MAX_PERIOD_SECONDS:
            raise forms.ValidationError(
                f"must be 1 to {rate_limit_services.MAX_PERIOD_SECONDS} seconds"
            )
        return value


@admin.register(RateLimit)
class RateLimitAdmin(admin.ModelAdmin):
    """Editable: a new limit or period applies to the next start of a limited node."""

    form = RateLimitForm
    list_display = ["name", "limit", "period_seconds", "owner", "updated_at"]
    list_filter = ["owner"]
    search_fields = ["name", "owner__username"]
    readonly_fields = ["id", "created_at", "updated_at", "used_by"]

    @admin.display(description="used by")
    def used_by(self, obj: RateLimit) -> str:
        if not obj.pk:
            return "-"
        used = rate_limit_services.rate_limit_used_by(owner_id=obj.owner_id, name=obj.name)
        return ", ".join(w["name"] for w in used) or "-"

    def has_delete_permission(self, request, obj=None):
        # A limit that workflows still name cannot go: their nodes would fail when they run.
        if obj is not None and rate_limit_services.rate_limit_used_by(
            owner_id=obj.owner_id, name=obj.name
        ):
            return False
        return super().has_delete_permission(request, obj)
