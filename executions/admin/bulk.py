"""Bulk operations in the admin: the jobs with their progress, and the execution-list actions
that start one for the selection (or, with "select all", for the whole current filter)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.urls import reverse

from executions.admin.inspect import short_id
from executions.models import BulkOperation
from executions.services.bulk import bulk_operation_start


def _start(modeladmin, request, queryset, action: str):
    ids = list(queryset.values_list("id", flat=True))
    operation, _ = bulk_operation_start(owner=request.user, action=action, filter={"ids": ids})
    modeladmin.message_user(
        request,
        f"Started bulk {action} {short_id(operation.id)} of {operation.matched} execution(s); "
        "its progress is on this page.",
        messages.SUCCESS,
    )
    return HttpResponseRedirect(
        reverse("admin:executions_bulkoperation_change", args=[operation.pk])
    )


@admin.action(description="Retry selected executions in the background (bulk job)")
def bulk_retry(modeladmin, request, queryset):
    return _start(modeladmin, request, queryset, BulkOperation.Action.RETRY)


@admin.action(description="Cancel selected executions in the background (bulk job)")
def bulk_cancel(modeladmin, request, queryset):
    return _start(modeladmin, request, queryset, BulkOperation.Action.CANCEL)


@admin.register(BulkOperation)
class BulkOperationAdmin(admin.ModelAdmin):
    list_display = ["short", "action", "status", "matched", "done", "failed", "owner", "created_at"]
    list_filter = ["action", "status"]
    fields = [
        "id",
        "action",
        "mode",
        "status",
        "matched",
        "done",
        "failed",
        "filter",
        "errors",
        "owner",
        "idempotency_key",
        "created_at",
        "started_at",
        "finished_at",
    ]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="id")
    def short(self, obj):
        return short_id(obj.id)
