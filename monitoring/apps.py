from django.apps import AppConfig

from monitoring import checks  # noqa: F401  (registers the deploy check)


class MonitoringConfig(AppConfig):
    name = "monitoring"
