from __future__ import annotations

import os

from celery import Celery
from celery.signals import (
    beat_init,
    celeryd_init,
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
)

from monitoring import processes
from weconnect import tracing

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


@celeryd_init.connect
def _report_starting(sender=None, **kwargs) -> None:
    # The first signal of a worker, long before it answers a ping: health reports it as
    # starting rather than missing.
    processes.start("worker", host=str(sender), state=processes.STARTING)


@worker_ready.connect
def _report_ready(**kwargs) -> None:
    processes.set_state(processes.READY)


@worker_process_init.connect
def _report_pool_process(**kwargs) -> None:
    processes.start("worker", state=processes.READY)


@worker_process_init.connect
def _tracing_in_pool_process(**kwargs) -> None:
    # After the fork: the span exporter's thread does not survive one.
    tracing.configure("weconnect-worker")


@worker_process_shutdown.connect
def _tracing_flush(**kwargs) -> None:
    tracing.shutdown()


@beat_init.connect
def _tracing_in_beat(**kwargs) -> None:
    # Beat's sends carry the context of the scheduled trigger's trace to the task.
    tracing.configure("weconnect-beat")
