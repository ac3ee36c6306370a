"""The stock settings plus the one change docs/performance.md proposes: Celery workers keep
their database connection from one task to the next.

Celery's Django fixup closes every database connection before and after each task unless
CELERY_DB_REUSE_MAX is set, so each node run otherwise pays a new PostgreSQL connection (a
backend process forked, authenticated and torn down). Run the suite with it as
``DJANGO_SETTINGS_MODULE=benchmarks.settings_db_reuse python -m benchmarks``."""

from weconnect.settings import *  # noqa: F403

CELERY_DB_REUSE_MAX = 1000
