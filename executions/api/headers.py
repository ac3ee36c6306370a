"""Request headers the API reads itself."""

from __future__ import annotations

from rest_framework.exceptions import ValidationError


def idempotency_key(request) -> str | None:
    """The Idempotency-Key header: 1-255 characters, none of them a control character
    (PostgreSQL's text cannot hold NUL, and a key is meant to be copied and logged)."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= 255:
        raise ValidationError({"Idempotency-Key": ["must be 1-255 characters"]})
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise ValidationError({"Idempotency-Key": ["must not contain control characters"]})
    return key
