"""The processes a benchmark run starts and stops: Celery workers (the engine's and the raw
app's) with a fixed prefork pool, and gunicorn for the trigger latency."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support.processes import CeleryWorker, stop_group

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = ROOT / "var" / "bench"


class Worker(CeleryWorker):
    """An engine or raw-app worker of a benchmark run; logs under var/bench/."""

    def __init__(self, *, app: str, queue: str, concurrency: int, name: str, run_id: str):
        super().__init__(
            app=app,
            queue=queue,
            concurrency=concurrency,
            hostname=f"wcbench-{run_id}-{name}@localhost",
            log=LOG_DIR / f"worker-{run_id}-{name}.log",
            extra_args=("--without-heartbeat",),
        )

    def wait_ready(self, celery_app, timeout: float = 60) -> None:
        super().wait_ready(celery_app, timeout, whole_pool=True)


class WebServer:
    """gunicorn serving weconnect.wsgi on a free local port."""

    def __init__(self, *, workers: int, threads: int, run_id: str):
        self.workers, self.threads = workers, threads
        self.port = free_port()
        self.log = LOG_DIR / f"gunicorn-{run_id}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> WebServer:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        worker_class = ["-k", "gthread", "--threads", str(self.threads)] if self.threads > 1 else []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "weconnect.wsgi:application",
                "-b",
                f"127.0.0.1:{self.port}",
                "-w",
                str(self.workers),
                *worker_class,
                "--backlog",
                "256",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not _port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start; see {self.log}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        stop_group(self.proc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
