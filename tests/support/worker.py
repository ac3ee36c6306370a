"""The worker of a test run: a real ``celery worker`` on this run's queue, against the test
database."""

from __future__ import annotations

import os
from urllib.parse import quote

from django.conf import settings

from tests.environment import RUN_ID
from tests.support.processes import ROOT, CeleryWorker
from weconnect.celery import app as engine_app


def database_url_for_workers() -> str:
    """The test database, as a URL for worker subprocesses (after pytest-django created it)."""
    db = settings.DATABASES["default"]
    host = db.get("HOST") or "127.0.0.1"
    if host.startswith("/"):
        host = quote(host, safe="")
    elif db.get("PORT"):
        host = f"{host}:{db['PORT']}"
    user = quote(db.get("USER") or "postgres", safe="")
    password = f":{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{host}/{db['NAME']}"


class WorkerProcess(CeleryWorker):
    """A real worker on this test run's queue, against the test database."""

    def __init__(
        self,
        *,
        concurrency: int = 4,
        name: str = "main",
        env: dict | None = None,
        base_env: dict | None = None,
    ):
        """``env`` is added to this run's environment pointed at the test database;
        ``base_env`` replaces that environment whole (a worker on another database)."""
        if base_env is None:
            base_env = {**os.environ, "DATABASE_URL": database_url_for_workers()}
        full_env = {**base_env, **(env or {})}
        super().__init__(
            queue=full_env.get("WECONNECT_QUEUE", settings.WECONNECT_QUEUE),
            concurrency=concurrency,
            hostname=f"wctest-{RUN_ID}-{name}@localhost",
            log=ROOT / "var" / f"test-worker-{RUN_ID}-{name}.log",
            env=full_env,
        )

    def start(self, wait: bool = True) -> WorkerProcess:
        super().start()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, celery_app=None, timeout: float = 60, whole_pool: bool = False) -> None:
        super().wait_ready(celery_app or engine_app, timeout, whole_pool)
