"""What became of each cron slot of each schedule, read-only."""

from __future__ import annotations

from django.contrib import admin

from executions.models import ScheduleSlot


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
