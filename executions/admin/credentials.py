from __future__ import annotations

from django.contrib import admin

from executions.credentials.models import Credential


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
