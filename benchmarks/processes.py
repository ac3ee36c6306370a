"""The processes a benchmark run starts and stops: Celery workers (the engine's and the raw
app's) with a fixed prefork pool, and gunicorn for the trigger latency."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = ROOT / "var" / "bench"


class Worker:
    """``celery worker -P prefork -c N`` for ``app`` on ``queue``; logs under var/bench/."""

    def __init__(self, *, app: str, queue: str, concurrency: int, name: str, run_id: str):
        self.app, self.queue, self.concurrency = app, queue, concurrency
        self.hostname = f"wcbench-{run_id}-{name}@localhost"
        self.log = LOG_DIR / f"worker-{run_id}-{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Worker:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                self.app,
                "worker",
                "-P",
                "prefork",
                "-c",
                str(self.concurrency),
                "-n",
                self.hostname,
                "-Q",
                self.queue,
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
                "-l",
                "warning",
                "-O",
                "fair",
            ],
            cwd=ROOT,
            stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait_ready(self, celery_app, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.hostname} exited early; see {self.log}")
            try:
                if celery_app.control.ping(destination=[self.hostname], timeout=0.5):
                    break
            except Exception:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError(f"worker {self.hostname} not ready after {timeout}s; see {self.log}")
        # Ping is answered by the parent; wait until the whole pool has forked.
        while len(psutil.Process(self.proc.pid).children()) < self.concurrency:
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.hostname} pool incomplete; see {self.log}")
            time.sleep(0.1)

    def rss_bytes(self) -> int:
        """Resident memory of the parent and its pool children."""
        parent = psutil.Process(self.proc.pid)
        total = parent.memory_info().rss
        for child in parent.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self) -> None:
        _stop_group(self.proc)


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
        _stop_group(self.proc)


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


def _stop_group(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
