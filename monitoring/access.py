"""Who may read the monitoring documents: anyone, unless WECONNECT_MONITORING_TOKEN is set."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest


def presented_token(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.GET.get("token") or None


def monitoring_access(request: HttpRequest) -> bool:
    """True when no token is configured, or when the request presents the configured one."""
    expected = settings.WECONNECT_MONITORING_TOKEN
    if not expected:
        return True
    given = presented_token(request)
    # Constant-time comparison: the token must not leak through response timing.
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
