"""System checks for the credential keys (run by `manage.py check`, migrate, runserver)."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


@register(Tags.security, deploy=True)
def encryption_keys_check(app_configs, **kwargs):
    if settings.WECONNECT_ENCRYPTION_KEYS:
        return []
    if settings.DEBUG:
        return [
            Warning(
                "WECONNECT_ENCRYPTION_KEYS is not set: credentials are encrypted with a key "
                "derived from SECRET_KEY (DEBUG only).",
                id="weconnect.W001",
            )
        ]
    return [
        Error(
            "WECONNECT_ENCRYPTION_KEYS is not set: credentials cannot be stored or used.",
            hint="Set it to one or more comma-separated Fernet keys (see docs/security.md).",
            id="weconnect.E001",
        )
    ]
