from __future__ import annotations

from django.conf import settings
from rest_framework.permissions import BasePermission


class APIDocsPermission(BasePermission):
    """The OpenAPI schema and Swagger UI: public when WECONNECT_PUBLIC_API_DOCS is true,
    otherwise for authenticated users only (read at each request, so tests can switch it)."""

    def has_permission(self, request, view) -> bool:
        if settings.WECONNECT_PUBLIC_API_DOCS:
            return True
        return bool(request.user and request.user.is_authenticated)
