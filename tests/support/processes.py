"""The one Celery worker launcher of the tests and the benchmarks: a real ``celery worker``
process with a prefork pool, in a session of its own so that it stops as a whole. It imports
nothing of Django's, so the benchmarks can use it before they configure it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent.parent


def stop_group(proc: subprocess.Popen | None) -> None:
    """SIGTERM a process group, then SIGKILL it if it is still there after 20 seconds."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class CeleryWorker:
    """``celery -A app worker -P prefork -c N -Q queue`` logging to ``log``."""

    def __init__(
        self,
        *,
        app: str = "weconnect",
        queue: str,
        concurrency: int,
        hostname: str,
        log: Path,
        env: dict | None = None,
        extra_args: tuple[str, ...] = (),
    ):
        self.app, self.queue, self.concurrency = app, queue, concurrency
        self.hostname, self.log, self.env = hostname, log, env
        self.extra_args = extra_args
        self.proc: subprocess.Popen | None = None

    def start(self) -> CeleryWorker:
        self.log.parent.mkdir(parents=True, exist_ok=True)
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
                *self.extra_args,
                "-l",
                "warning",
                "-O",
                "fair",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait_ready(self, celery_app, timeout: float = 60, whole_pool: bool = False) -> None:
        """Until the worker answers a ping of ``celery_app`` (and, with ``whole_pool``, has
        forked every pool child: the parent answers the ping before that)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.hostname} exited early; see {self.log}")
            try:
                if celery_app.control.ping(destination=[self.hostname], timeout=0.5):
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"worker {self.hostname} not ready after {timeout}s; see {self.log}"
                )
            time.sleep(0.2)
        while whole_pool and len(self.child_pids()) < self.concurrency:
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.hostname} pool incomplete; see {self.log}")
            time.sleep(0.1)

    def child_pids(self) -> list[int]:
        return [c.pid for c in psutil.Process(self.proc.pid).children()]

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
        stop_group(self.proc)

    def kill(self) -> None:
        """SIGKILL the whole worker (parent and pool children) at once."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
