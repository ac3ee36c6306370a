"""Executions in the admin: the run inspector.

The page shows what a person debugging a run needs, top to bottom: a failure summary (the
root cause, not the wrapper), the buttons (cancel, retry, run again with new input), the graph
coloured by status with the branches taken, every node in graph order with its input, output,
error and history, and a timeline. An active execution refreshes itself: a few lines of
JavaScript fetch the same fragment from ``<id>/live/`` until it finishes.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.http import HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from executions.admin.bulk import bulk_cancel, bulk_retry
from executions.admin.graphs import STATUS_COLOURS, graph_svg, timeline_svg
from executions.admin.inspect import (
    display_status,
    failure_summary,
    fmt_datetime,
    fmt_duration,
    fmt_time,
    inline_svg,
    is_uuid,
    node_order,
    pretty,
    redactor,
    short_id,
    status_badge,
    waiting_for,
)
from executions.history import node_run_history
from executions.models import Execution, NodeRun
from executions.selectors import queue_position
from executions.services.executions import Conflict, execution_cancel, execution_retry
from executions.services.pause import execution_pause, execution_unpause
from executions.states import EXECUTION_ACTIVE, EXECUTION_UNFINISHED, ExecutionStatus


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


@admin.action(description="Retry on the latest workflow version")
def retry_executions_latest(modeladmin, request, queryset):
    done = 0
    for execution in queryset:
        try:
            execution_retry(execution=execution, mode="from_failed", version="latest")
            done += 1
        except Conflict as exc:
            modeladmin.message_user(request, f"{execution.id}: {exc}", messages.WARNING)
    modeladmin.message_user(request, f"Started {done} retry execution(s).", messages.SUCCESS)


def inspector_context(execution: Execution, *, now=None) -> dict[str, Any]:
    """Everything the inspector fragment shows, from the execution and its node runs."""
    now = now or timezone.now()
    graph_doc = execution.snapshot.graph
    runs = list(execution.node_runs.all())
    order = {key: i for i, key in enumerate(node_order(graph_doc))}
    runs.sort(key=lambda r: (order.get(r.node, len(order)), r.id))
    names = {n.get("key"): n.get("name") or "" for n in graph_doc.get("nodes") or []}
    redact = redactor(owner_id=execution.workflow.owner_id, graph_doc=graph_doc)
    flower = settings.WECONNECT_FLOWER_URL
    nodes = []
    for run in runs:
        shown = display_status(run, execution.status)
        end = run.finished_at or (now if run.started_at and run.status == "running" else None)
        queue_wait = (
            (run.started_at - run.queued_at).total_seconds()
            if run.started_at and run.queued_at and not run.retry_delays
            else None
        )
        nodes.append(
            {
                "key": run.node,
                "name": names.get(run.node, ""),
                "type": run.node_type,
                "status": run.status,
                "shown": shown,
                "badge": status_badge(shown),
                "attempts": run.attempts,
                "queued": fmt_time(run.queued_at),
                "started": fmt_time(run.started_at),
                "finished": fmt_time(run.finished_at),
                "duration": fmt_duration(
                    (end - run.started_at).total_seconds() if end and run.started_at else None
                ),
                "queue_wait": fmt_duration(queue_wait),
                "retry_waits": ", ".join(fmt_duration(float(d)) for d in run.retry_delays or []),
                "waiting": (
                    "held: the execution is paused"
                    if execution.status == ExecutionStatus.PAUSED
                    and run.status in ("queued", "retrying")
                    else waiting_for(run, now)
                ),
                "input": pretty(redact(run.input)),
                "output": pretty(redact(run.output)),
                "error": pretty(redact(run.error)) if run.error else "",
                "history": node_run_history(run),
                "flower": f"{flower}/task/{run.task_id}" if run.task_id else "",
                "task_id": run.task_id,
            }
        )
    by_node = {
        r.node: {
            "status": display_status(r, execution.status),
            "attempts": r.attempts,
            "branch": r.branch,
        }
        for r in runs
    }
    summary = failure_summary(execution, runs)
    if summary is not None:
        summary["waits_text"] = ", ".join(fmt_duration(float(w)) for w in summary["waits"])
        summary["message"] = redact(summary["message"])
    duration = None
    if execution.started_at:
        duration = ((execution.finished_at or now) - execution.started_at).total_seconds()
    timeline_rows = [
        {
            "node": r.node,
            "status": r.status,
            "display_status": display_status(r, execution.status),
            "attempts": r.attempts,
            "queued_at": r.queued_at,
            "started_at": r.started_at,
            "finished_at": r.finished_at,
            "retry_delays": r.retry_delays,
        }
        for r in runs
    ]
    return {
        "execution": execution,
        # Paused executions keep refreshing: their running nodes finish meanwhile.
        "active": execution.status in EXECUTION_UNFINISHED,
        "is_terminal": execution.status not in EXECUTION_UNFINISHED,
        "can_pause": execution.status in EXECUTION_ACTIVE,
        "is_paused": execution.status == ExecutionStatus.PAUSED,
        "can_retry_from_failed": execution.status
        in (ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT, ExecutionStatus.CANCELLED),
        "retries": list(execution.retries.order_by("created_at").values_list("id", "status")),
        "live_url": reverse("admin:executions_execution_live", args=[execution.pk]),
        "cancel_url": reverse("admin:executions_execution_cancel", args=[execution.pk]),
        "retry_url": reverse("admin:executions_execution_retry", args=[execution.pk]),
        "pause_url": reverse("admin:executions_execution_pause", args=[execution.pk]),
        "unpause_url": reverse("admin:executions_execution_unpause", args=[execution.pk]),
        "short_id": short_id(execution.id),
        "status_badge": status_badge(execution.status),
        "created": fmt_datetime(execution.created_at),
        "started": fmt_datetime(execution.started_at),
        "finished": fmt_datetime(execution.finished_at),
        "deadline": fmt_datetime(execution.deadline_at),
        "duration": fmt_duration(duration),
        "summary": summary,
        "nodes": nodes,
        "graph_svg": inline_svg(graph_svg(graph_doc, by_node)),
        "timeline_svg": inline_svg(
            timeline_svg(timeline_rows, origin=execution.created_at, now=now)
        ),
        "status_colours": [(s, STATUS_COLOURS.get(s)) for s in sorted({r.status for r in runs})],
        "input": pretty(redact(execution.input)),
        "output": pretty(redact(execution.output)) if execution.output is not None else "",
        "error": pretty(redact(execution.error)) if execution.error else "",
        "flower_url": settings.WECONNECT_FLOWER_URL,
    }


@admin.register(Execution)
class ExecutionAdmin(admin.ModelAdmin):
    list_display = [
        "short",
        "workflow_name",
        "coloured_status",
        "trigger",
        "created",
        "duration",
    ]
    list_display_links = ["short"]

    class Media:
        css = {"all": ["executions/changelist.css"]}

    list_filter = ["status", "trigger", "priority", "workflow", "created_at"]
    search_fields = ["id", "workflow_name", "idempotency_key"]
    list_select_related = ["workflow"]
    actions = [
        cancel_executions,
        retry_executions,
        retry_executions_latest,
        bulk_retry,
        bulk_cancel,
    ]
    date_hierarchy = "created_at"
    list_per_page = 50
    fields = [
        "id",
        "workflow",
        "workflow_version",
        "trigger",
        "idempotency_key",
        "retry_of",
        "parent_link",
        "item_index",
        "children_link",
        "concurrency_key",
        "place_in_line",
        "depth",
        "deadline_at",
    ]
    # The children list linked from an execution's page filters on its parent.
    _child_lookups = ("parent_node_run__execution__id__exact", "parent_node_run__id__exact")

    def get_readonly_fields(self, request, obj=None):
        return self.fields

    def lookup_allowed(self, lookup, value, request=None):
        return lookup in self._child_lookups or super().lookup_allowed(lookup, value, request)

    @admin.display(description="started by")
    def parent_link(self, obj: Execution):
        """The execution (and node) that started this one: a sub_workflow or for_each."""
        if obj.parent_node_run_id is None:
            return "-"
        parent = (
            NodeRun.objects.filter(id=obj.parent_node_run_id)
            .values_list("execution_id", "node")
            .first()
        )
        if parent is None:
            return "-"
        label = f"{short_id(parent[0])}, node {parent[1]}"
        if obj.item_index is not None:
            label += f", item {obj.item_index}"
        url = reverse("admin:executions_execution_change", args=[parent[0]])
        return format_html('<a href="{}">{}</a>', url, label)

    @admin.display(description="place in line")
    def place_in_line(self, obj: Execution):
        """For an execution queued behind its workflow's concurrency limit: 1 = next."""
        position = queue_position(obj)
        return "-" if position is None else position

    @admin.display(description="children")
    def children_link(self, obj: Execution):
        """The executions this one's nodes started (sub-workflows, for_each items)."""
        count = Execution.objects.filter(parent_node_run__execution_id=obj.id).count()
        if not count:
            return "-"
        url = reverse("admin:executions_execution_changelist")
        return format_html(
            '<a href="{}?parent_node_run__execution__id__exact={}">{} child execution{}</a>',
            url,
            obj.id,
            count,
            "" if count == 1 else "s",
        )

    def has_add_permission(self, request):
        return False

    # Read-only: the engine alone changes executions (cancel and retry go through services).
    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="id", ordering="id")
    def short(self, obj: Execution):
        return format_html('<code title="{}">{}</code>', obj.id, short_id(obj.id))

    @admin.display(description="workflow", ordering="workflow__name")
    def workflow_name(self, obj: Execution):
        # Clipped so a long name never pushes the status and times out of a 1280 px window.
        name = obj.workflow.name
        return format_html(
            '<span title="{}">{}</span>', name, name if len(name) <= 40 else name[:39] + "…"
        )

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Execution):
        return format_html(
            '<span style="white-space:nowrap" title="{}">{}</span>',
            obj.created_at.isoformat(),
            fmt_datetime(obj.created_at),
        )

    @admin.display(description="duration")
    def duration(self, obj: Execution):
        if obj.started_at and obj.finished_at:
            return fmt_duration((obj.finished_at - obj.started_at).total_seconds())
        if obj.started_at:  # still going: the time so far
            return format_html(
                "{}…", fmt_duration((timezone.now() - obj.started_at).total_seconds())
            )
        return None

    @admin.display(description="status", ordering="status")
    def coloured_status(self, obj: Execution):
        return status_badge(obj.status)

    # --- the page and its buttons -------------------------------------------------------

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/live/", view(self.live_view), name="executions_execution_live"),
            path(
                "<path:object_id>/cancel/",
                view(self.cancel_view),
                name="executions_execution_cancel",
            ),
            path(
                "<path:object_id>/retry/", view(self.retry_view), name="executions_execution_retry"
            ),
            path(
                "<path:object_id>/pause/",
                view(self.pause_view),
                name="executions_execution_pause",
            ),
            path(
                "<path:object_id>/unpause/",
                view(self.unpause_view),
                name="executions_execution_unpause",
            ),
            *super().get_urls(),
        ]

    def _execution(self, object_id) -> Execution | None:
        if not is_uuid(object_id):
            return None
        return (
            Execution.objects.filter(pk=object_id)
            .select_related("snapshot", "workflow", "retry_of")
            .first()
        )

    def _page(self, execution: Execution) -> HttpResponseRedirect:
        return HttpResponseRedirect(
            reverse("admin:executions_execution_change", args=[execution.pk])
        )

    def live_view(self, request, object_id):
        """The inspector fragment and the status, for the page's refresh loop."""
        execution = self._execution(object_id)
        if execution is None or not self.has_view_permission(request, execution):
            return JsonResponse({"detail": "no such execution"}, status=404)
        context = inspector_context(execution)
        html = render_to_string(
            "admin/executions/execution/inspector.html", context, request=request
        )
        return JsonResponse({"status": execution.status, "active": context["active"], "html": html})

    def cancel_view(self, request, object_id):
        execution = get_object_or_404(Execution, pk=object_id) if is_uuid(object_id) else None
        if execution is None:
            return HttpResponseRedirect(reverse("admin:executions_execution_changelist"))
        if request.method == "POST":
            try:
                execution_cancel(
                    execution=execution, reason=f"cancelled in the admin by {request.user}"
                )
                self.message_user(request, "Execution cancelled.", messages.SUCCESS)
            except Conflict as exc:
                self.message_user(request, str(exc), messages.WARNING)
        return self._page(execution)

    def pause_view(self, request, object_id):
        return self._control(request, object_id, execution_pause, "Execution paused.")

    def unpause_view(self, request, object_id):
        return self._control(request, object_id, execution_unpause, "Execution unpaused.")

    def _control(self, request, object_id, service, done: str):
        execution = self._execution(object_id)
        if execution is None:
            return HttpResponseRedirect(reverse("admin:executions_execution_changelist"))
        if request.method == "POST":
            try:
                service(execution=execution, actor=str(request.user))
                self.message_user(request, done, messages.SUCCESS)
            except Conflict as exc:
                self.message_user(request, str(exc), messages.WARNING)
        return self._page(execution)

    def retry_view(self, request, object_id):
        """Retry from failed, from start, or from start with a new JSON input."""
        execution = self._execution(object_id)
        if execution is None:
            return HttpResponseRedirect(reverse("admin:executions_execution_changelist"))
        if request.method != "POST":
            return self._page(execution)
        mode = request.POST.get("mode", "from_failed")
        if mode not in ("from_failed", "from_start", "new_input"):
            self.message_user(request, f"mode: unknown mode {mode!r}", messages.ERROR)
            return self._page(execution)
        new_input = None
        if mode == "new_input":
            try:
                new_input = json.loads(request.POST.get("input", "").strip() or "{}")
            except ValueError as exc:
                self.message_user(request, f"input: not valid JSON ({exc})", messages.ERROR)
                return self._page(execution)
            if not isinstance(new_input, dict):
                self.message_user(request, "input: must be a JSON object", messages.ERROR)
                return self._page(execution)
        try:
            new = execution_retry(
                execution=execution,
                mode="from_failed" if mode == "from_failed" else "from_start",
                input=new_input,
            )
        except Conflict as exc:
            self.message_user(request, str(exc), messages.WARNING)
            return self._page(execution)
        self.message_user(request, f"Started retry {short_id(new.id)}.", messages.SUCCESS)
        return self._page(new)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The run inspector above the execution's remaining fields."""
        extra_context = dict(extra_context or {})
        execution = self._execution(object_id)
        if execution is not None:
            extra_context.update(inspector_context(execution))
            extra_context["refresh_ms"] = settings.WECONNECT_ADMIN_REFRESH_MS
        return super().change_view(request, object_id, form_url, extra_context)
