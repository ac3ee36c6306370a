from django.apps import AppConfig


class ExecutionsConfig(AppConfig):
    name = "executions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        import importlib

        from django.conf import settings

        from executions import nodes  # noqa: F401  (registers the built-in node types)

        for module in settings.WECONNECT_NODE_MODULES:
            importlib.import_module(module)
