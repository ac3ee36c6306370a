"""Who may read what of the monitoring documents.

Two levels:
- **public**: anyone when WECONNECT_MONITORING_TOKEN is unset, otherwise only privileged callers.
  It sees aggregate figures (counts, latencies, queue depths), never another user's data.
- **privileged**: the configured monitoring token (``Authorization: Bearer`` or ``?token=``), or
  a staff user (admin session, or an API token ``Authorization: Token <key>``). Only they see
  failure details (error documents carry inputs, remote response bodies, URLs with query keys),
  what each worker is running, and the workers' names.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed


def presented_token(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.GET.get("token") or None


def _token_matches(request: HttpRequest) -> bool:
    expected = settings.WECONNECT_MONITORING_TOKEN
    if not expected:
        return False
    given = presented_token(request)
    # Constant-time comparison: the token must not leak through response timing.
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _staff(request: HttpRequest) -> bool:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return bool(user.is_active and user.is_staff)
    try:
        found = TokenAuthentication().authenticate(request)
    except AuthenticationFailed:
        return False
    return bool(found and found[0].is_active and found[0].is_staff)


def monitoring_privileged(request: HttpRequest) -> bool:
    """True for the monitoring token or a staff user: may read details of other users' runs."""
    return _token_matches(request) or _staff(request)


def monitoring_access(request: HttpRequest) -> bool:
    """True when the public monitoring figures may be shown: no token is configured, or the
    caller is privileged."""
    if not settings.WECONNECT_MONITORING_TOKEN:
        return True
    return monitoring_privileged(request)
