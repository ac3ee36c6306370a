"""System checks for monitoring (reported by `manage.py check --deploy`)."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security, deploy=True)
def monitoring_token_check(app_configs, **kwargs):
    if settings.WECONNECT_MONITORING_TOKEN:
        return []
    return [
        Warning(
            "WECONNECT_MONITORING_TOKEN is not set: anyone who reaches /monitoring/ reads the "
            "health document and the metrics (aggregate figures only; failure details and "
            "worker names need a staff user).",
            hint="Set it to a long random value and give it to your scraper and load balancer "
            "(see docs/security.md).",
            id="monitoring.W001",
        )
    ]
