from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "weconnect.settings")

app = Celery("weconnect")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
