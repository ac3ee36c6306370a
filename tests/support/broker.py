"""A broker of the test's own: a redis-server on a free port that a test may stop and restart
(it keeps nothing on disk, so a restart loses every queued message), with the in-process Celery
app switched to it and workers started against it."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from tests.environment import free_port, start_redis
from tests.support.worker import WorkerProcess
from weconnect.celery import app


def _reset_app_connections() -> None:
    # Celery caches its connection and producer pools; drop them (without closing: other
    # objects may still hold the old pool) so the next publish connects to the broker now
    # configured.
    app._pool = None
    with contextlib.suppress(Exception):
        app.amqp._producer_pool = None


class PrivateBroker:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="wc-broker-"))
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None
        self.workers: list[WorkerProcess] = []
        self._saved = None

    def start(self) -> PrivateBroker:
        self.proc = start_redis(self.port, self.dir)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> PrivateBroker:
        self.start()
        # CELERY_BROKER_URL in the environment takes precedence over the configured URL in
        # Celery's own settings lookup (read and write URLs both fall back to it).
        self._saved = os.environ.get("CELERY_BROKER_URL")
        os.environ["CELERY_BROKER_URL"] = self.url
        _reset_app_connections()
        return self

    def __exit__(self, *exc) -> None:
        for w in self.workers:
            w.stop()
        if self._saved is None:
            os.environ.pop("CELERY_BROKER_URL", None)
        else:
            os.environ["CELERY_BROKER_URL"] = self._saved
        _reset_app_connections()
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def worker(self, name: str, concurrency: int = 2, **env: str) -> WorkerProcess:
        w = WorkerProcess(
            concurrency=concurrency,
            name=name,
            env={"REDIS_URL": self.url, "CELERY_BROKER_URL": self.url, **env},
        )
        self.workers.append(w)
        return w
