"""Named rate limits, editable: a new limit or period applies to the next start of a limited
node; a limit that workflows still name can be neither renamed nor deleted."""

from __future__ import annotations

from django import forms
from django.contrib import admin

from executions.models import RateLimit
from executions.services import rate_limits as rate_limit_services


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
