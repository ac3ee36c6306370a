from __future__ import annotations

import os

from celery import Celery
from celery.signals import task_prerun, worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "weconnect.settings")

app = Celery("weconnect")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _worker_connections(**kwargs) -> None:
    """Worker processes keep their database connection from task to task (CELERY_DB_REUSE_MAX):
    a new PostgreSQL connection per node run would cost more than the node run itself. The
    per-task health query is skipped here; a connection that failed is replaced before the
    next task instead (below)."""
    from django.db import connections

    for alias in connections:
        connections[alias].settings_dict["CONN_HEALTH_CHECKS"] = False


@task_prerun.connect
def _replace_broken_connections(**kwargs) -> None:
    # Closes a connection that saw an error (e.g. PostgreSQL restarted) or outlived
    # CONN_MAX_AGE; a healthy one is kept and costs no query.
    from django.db import close_old_connections

    close_old_connections()
