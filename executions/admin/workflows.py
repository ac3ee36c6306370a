"""Workflows in the admin: the definition is edited as one JSON document and saved through
the same services as the API (validation with every error shown, a new version when the graph
or settings change, schedule sync), never written to the rows directly."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, F, OuterRef, Q, Subquery
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html
from django_celery_beat.models import PeriodicTask

from executions.admin.graphs import graph_svg
from executions.admin.inspect import flatten_errors, inline_svg, is_uuid, status_badge
from executions.api.serializers import BackfillInputSerializer, WorkflowInputSerializer
from executions.models import Execution, Workflow, WorkflowVersion
from executions.services.executions import Conflict, execution_create
from executions.services.workflows import (
    WorkflowHasActiveExecutions,
    workflow_create,
    workflow_delete,
    workflow_document,
    workflow_replace,
)
from executions.states import EXECUTION_UNFINISHED, ExecutionStatus, Trigger
from executions.triggers.schedules import BackfillTooLarge, schedule_backfill, schedule_task_name
from executions.validation import validate_graph

EXAMPLE_DOCUMENT: dict[str, Any] = {
    "name": "example",
    "description": "",
    "is_active": True,
    "timeout_seconds": 3600,
    "schedule": None,
    "webhook_enabled": False,
    "nodes": [{"key": "start", "type": "noop"}, {"key": "end", "type": "noop"}],
    "connections": [{"source": "start", "target": "end"}],
}


class PrettyJSONField(forms.JSONField):
    """A JSON text box that shows its value indented, and keeps what was typed on an error."""

    def prepare_value(self, value):
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False)


class WorkflowForm(forms.ModelForm):
    document = PrettyJSONField(
        widget=forms.Textarea(
            attrs={"rows": 28, "cols": 100, "class": "wc-json", "spellcheck": "false"}
        ),
        help_text=(
            "The whole workflow as the API takes it (PUT /api/workflows/{id}/): name, description, "
            "is_active, timeout_seconds, schedule, webhook_enabled, nodes, connections. Saved "
            "through the same validation; a change to the graph or settings makes a new version."
        ),
    )

    class Meta:
        model = Workflow
        fields = ["owner"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.instance._state.adding and not self.is_bound:
            graph = (
                WorkflowVersion.objects.filter(
                    workflow=self.instance, version=self.instance.version
                )
                .values_list("graph", flat=True)
                .first()
            )
            # Shown in the order the API documents it (jsonb keeps keys in its own order).
            self.initial["document"] = (
                workflow_document(graph)
                if graph
                else {
                    **EXAMPLE_DOCUMENT,
                    "name": self.instance.name,
                    "nodes": [],
                    "connections": [],
                }
            )
        elif self.instance._state.adding and "document" not in self.initial:
            self.initial["document"] = EXAMPLE_DOCUMENT
        self.validated_data: dict[str, Any] | None = None

    def clean(self):
        cleaned = super().clean()
        doc = cleaned.get("document")
        if "document" in self.errors:
            return cleaned
        if not isinstance(doc, dict):
            self.add_error("document", "must be a JSON object")
            return cleaned
        owner = cleaned.get("owner") if self.instance._state.adding else self.instance.owner
        serializer = WorkflowInputSerializer(data=doc, context={"owner": owner})
        if not serializer.is_valid():
            found = flatten_errors(serializer.errors)
            # The graph checks run only once every field is well-formed; show theirs too when
            # the raw document allows it, so one save lists every problem.
            if not any(where in ("nodes", "connections") for where, _ in found):
                found += flatten_errors(_graph_errors(doc))
            self.add_error("document", [f"{where}: {msg}" for where, msg in found])
        else:
            self.validated_data = serializer.validated_data
        return cleaned


def _graph_errors(doc: dict[str, Any]) -> dict[str, list[str]]:
    nodes, connections = doc.get("nodes"), doc.get("connections") or []
    try:
        return validate_graph(nodes, connections) if isinstance(nodes, list) else {}
    except (KeyError, TypeError, AttributeError):  # too malformed to check as a graph
        return {}


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f} %" if whole else "–"


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    form = WorkflowForm
    # Few, short columns so the list fits a 1280 px window beside the filters; the owner is a
    # filter, the version is written after the name.
    list_display = [
        "display_name",
        "is_active",
        "last_status",
        "executions_link",
        "success_rate",
        "schedule_link",
    ]
    list_display_links = ["display_name"]

    class Media:
        css = {"all": ["executions/changelist.css"]}

    list_filter = ["is_active", "priority", "webhook_enabled", "owner"]
    search_fields = ["name", "description", "id", "nodes__key"]
    readonly_fields = ["id", "version", "created_at", "updated_at", "executions_summary"]

    def get_queryset(self, request):
        last = Execution.objects.filter(workflow=OuterRef("pk")).order_by("-created_at")
        return (
            super()
            .get_queryset(request)
            .select_related("owner")
            .annotate(
                n_executions=Count("executions"),
                n_succeeded=Count(
                    "executions", filter=Q(executions__status=ExecutionStatus.SUCCEEDED)
                ),
                n_finished=Count(
                    "executions",
                    filter=Q(
                        executions__status__in=[
                            ExecutionStatus.SUCCEEDED,
                            ExecutionStatus.FAILED,
                            ExecutionStatus.TIMED_OUT,
                        ]
                    ),
                ),
                last_status_value=Subquery(last.values("status")[:1]),
            )
        )

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["owner", "document"]
        return [
            "id",
            "owner",
            "version",
            "executions_summary",
            "created_at",
            "updated_at",
            "document",
        ]

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, "owner"] if obj is not None else []

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        initial.setdefault("owner", request.user.pk)
        return initial

    # --- writes go through the services -------------------------------------------------

    def save_model(self, request, obj, form, change):
        data = form.validated_data
        if change:
            saved = workflow_replace(workflow=obj, data=data)
        else:
            saved = workflow_create(owner=form.cleaned_data["owner"], data=data)
        # The admin goes on with ``obj`` (messages, the redirect): give it the saved row.
        for field in Workflow._meta.concrete_fields:
            setattr(obj, field.attname, getattr(saved, field.attname))
        obj._state.adding = False

    def save_related(self, request, form, formsets, change):
        # Nodes and connections were rewritten by the service from the document.
        pass

    # Deleting goes through workflow_delete, as in the API: not while executions are active,
    # and finished executions keep their history.
    def has_delete_permission(self, request, obj=None):
        if obj is not None and obj.executions.filter(status__in=EXECUTION_UNFINISHED).exists():
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

    # --- columns ------------------------------------------------------------------------

    @admin.display(description="name", ordering="name")
    def display_name(self, obj):
        name = obj.name if len(obj.name) <= 40 else obj.name[:39] + "…"
        return format_html(
            '<span title="{}">{}</span> <small>v{}</small>', obj.name, name, obj.version
        )

    @admin.display(description="last run")
    def last_status(self, obj):
        status = getattr(obj, "last_status_value", None)
        return status_badge(status) if status else "–"

    @admin.display(description="executions", ordering="n_executions")
    def executions_link(self, obj):
        url = reverse("admin:executions_execution_changelist") + f"?workflow__id__exact={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, getattr(obj, "n_executions", "…"))

    @admin.display(description="success")
    def success_rate(self, obj):
        return _pct(getattr(obj, "n_succeeded", 0), getattr(obj, "n_finished", 0))

    @admin.display(description="schedule")
    def schedule_link(self, obj):
        if not obj.schedule:
            return "–"
        task = PeriodicTask.objects.filter(name=schedule_task_name(obj)).only("id").first()
        cron = obj.schedule.get("cron", "") if isinstance(obj.schedule, dict) else ""
        if task is None:
            return cron
        url = reverse("admin:django_celery_beat_periodictask_change", args=[task.id])
        return format_html('<a href="{}">{}</a>', url, cron)

    @admin.display(description="executions")
    def executions_summary(self, obj):
        counts = dict(
            Execution.objects.filter(workflow=obj)
            .values_list("status")
            .annotate(n=Count("id"))
            .values_list("status", "n")
        )
        total = sum(counts.values())
        finished = sum(
            counts.get(s, 0)
            for s in (ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT)
        )
        url = reverse("admin:executions_execution_changelist") + f"?workflow__id__exact={obj.pk}"
        parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        return format_html(
            '<a href="{}">{} execution(s)</a> {} · success rate {}',
            url,
            total,
            f"({parts})" if parts else "",
            _pct(counts.get(ExecutionStatus.SUCCEEDED, 0), finished),
        )

    # --- the page: graph picture and the Run form ---------------------------------------

    def get_urls(self):
        return [
            path(
                "<path:object_id>/run/",
                self.admin_site.admin_view(self.run_view),
                name="executions_workflow_run",
            ),
            path(
                "<path:object_id>/backfill/",
                self.admin_site.admin_view(self.backfill_view),
                name="executions_workflow_backfill",
            ),
            *super().get_urls(),
        ]

    def run_view(self, request, object_id):
        """Start an execution with the JSON typed into the Run box (trigger ``admin``)."""
        workflow = get_object_or_404(Workflow, pk=object_id) if is_uuid(object_id) else None
        change_url = reverse("admin:executions_workflow_changelist")
        if workflow is None:
            return HttpResponseRedirect(change_url)
        change_url = reverse("admin:executions_workflow_change", args=[workflow.pk])
        if request.method != "POST" or not self.has_change_permission(request, workflow):
            return HttpResponseRedirect(change_url)
        raw = request.POST.get("input", "").strip() or "{}"
        try:
            data = json.loads(raw)
        except ValueError as exc:
            self.message_user(request, f"input: not valid JSON ({exc})", messages.ERROR)
            return HttpResponseRedirect(change_url)
        if not isinstance(data, dict):
            self.message_user(request, "input: must be a JSON object", messages.ERROR)
            return HttpResponseRedirect(change_url)
        if not workflow.is_active:
            self.message_user(request, "workflow is inactive", messages.ERROR)
            return HttpResponseRedirect(change_url)
        try:
            execution, _ = execution_create(workflow=workflow, input=data, trigger=Trigger.ADMIN)
        except Conflict as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(change_url)
        self.message_user(request, f"Started execution {execution.id}.", messages.SUCCESS)
        return HttpResponseRedirect(
            reverse("admin:executions_execution_change", args=[execution.pk])
        )

    def backfill_view(self, request, object_id):
        """Start one run per schedule slot in [start, end), as POST .../backfill/ does."""
        workflow = get_object_or_404(Workflow, pk=object_id) if is_uuid(object_id) else None
        if workflow is None:
            return HttpResponseRedirect(reverse("admin:executions_workflow_changelist"))
        change_url = reverse("admin:executions_workflow_change", args=[workflow.pk])
        if request.method != "POST" or not self.has_change_permission(request, workflow):
            return HttpResponseRedirect(change_url)
        form = BackfillInputSerializer(
            data={"start": request.POST.get("start"), "end": request.POST.get("end")}
        )
        if not form.is_valid():
            problems = "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in form.errors.items())
            self.message_user(request, problems, messages.ERROR)
            return HttpResponseRedirect(change_url)
        try:
            decisions = schedule_backfill(workflow=workflow, **form.validated_data)
        except (Conflict, BackfillTooLarge) as exc:
            self.message_user(request, f"backfill: {exc}", messages.ERROR)
            return HttpResponseRedirect(change_url)
        started = sum(1 for d in decisions if d.created)
        self.message_user(
            request,
            f"Backfill: {len(decisions)} slot(s), {started} run(s) started, "
            f"{len(decisions) - started} already had one.",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(
            reverse("admin:executions_execution_changelist") + f"?workflow__id__exact={workflow.pk}"
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The edit page, with a picture of the current version's graph, a Run box and (for a
        scheduled workflow) a Backfill box."""
        extra_context = dict(extra_context or {})
        doc = (
            WorkflowVersion.objects.filter(workflow_id=object_id, workflow__version=F("version"))
            .values_list("graph", flat=True)
            .first()
            if is_uuid(object_id)
            else None
        )
        if doc is not None:
            extra_context["graph_svg"] = inline_svg(graph_svg(doc))
            extra_context["run_url"] = reverse("admin:executions_workflow_run", args=[object_id])
            if doc.get("schedule"):
                extra_context["backfill_url"] = reverse(
                    "admin:executions_workflow_backfill", args=[object_id]
                )
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
