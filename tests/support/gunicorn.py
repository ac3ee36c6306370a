"""The Procfile's `web` process (gunicorn) started by a test on a free port, against the test
database."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import httpx

from tests.environment import RUN_ID, free_port
from tests.support.processes import ROOT
from tests.support.worker import database_url_for_workers


def procfile_command(name: str) -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name} process in the Procfile")


class WebProcess:
    """The Procfile's `web` process (gunicorn) on a free port, against the test database."""

    def __init__(self) -> None:
        self.port = free_port()
        self.log = Path(ROOT / "var" / f"test-web-{RUN_ID}-{uuid.uuid4().hex[:6]}.log")
        env = {
            **os.environ,
            "DATABASE_URL": database_url_for_workers(),
            "WEB_BIND": f"127.0.0.1:{self.port}",
            "ALLOWED_HOSTS": "127.0.0.1",
            "PATH": f"{Path(os.sys.executable).parent}:{os.environ.get('PATH', '')}",
        }
        self.log.parent.mkdir(exist_ok=True)
        self.proc = subprocess.Popen(
            ["sh", "-c", "exec " + procfile_command("web")],
            cwd=ROOT,
            env=env,
            stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"gunicorn exited; see {self.log}"
            try:
                httpx.get(self.url("/monitoring/live"), timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError(f"gunicorn not ready after {timeout}s; see {self.log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
