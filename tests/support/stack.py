"""The stack as production runs it, for tests that break things: the Procfile's own commands
(release, web, worker, beat) started as separate processes against a database and a Redis the
test chooses, each of which the test may kill, restart or cut off."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from weconnect.devstack import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}


def procfile() -> dict[str, str]:
    roles = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if ":" in line and not line.lstrip().startswith("#"):
            role, command = line.split(":", 1)
            roles[role.strip()] = command.strip()
    return roles


class Stack:
    """One deployment: its own queue and key prefixes, its own web port."""

    def __init__(self, *, database_url: str, redis_url: str, name: str, **env: str) -> None:
        self.name = name
        tag = uuid.uuid4().hex[:8]
        self.port = free_port()
        bin_dir = str(Path(sys.executable).parent)
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "CELERY_BROKER_URL": redis_url,
            "WECONNECT_QUEUE": f"wcstack-{tag}",
            "WECONNECT_KEY_PREFIX": f"wcstack:{tag}:",
            "WECONNECT_BROKER_KEY_PREFIX": f"wcstack-{tag}:",
            "WEB_BIND": f"127.0.0.1:{self.port}",
            # Production settings (DEBUG off) with the hosts this stack is reached by.
            "DEBUG": "false",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "WEB_CONCURRENCY": "2",
            "WORKER_CONCURRENCY": "2",
            "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.env.pop("PORT", None)
        # Outside the test run (the soak) nobody has set a key yet.
        self.env.setdefault("SECRET_KEY", f"stack-only-{uuid.uuid4().hex}")
        self.processes: dict[str, subprocess.Popen] = {}
        self.logs = ROOT / "var"
        self.logs.mkdir(exist_ok=True)
        self.token = ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_path(self, key: str) -> Path:
        return self.logs / f"stack-{self.name}-{key}.log"

    def release(self) -> None:
        """The Procfile's release step (migrate, collectstatic), then an API account."""
        subprocess.run(
            ["bash", "-c", procfile()["release"]],
            cwd=ROOT,
            env=self.env,
            check=True,
            timeout=300,
            stdout=subprocess.DEVNULL,
        )
        script = (
            "from django.contrib.auth import get_user_model\n"
            "from rest_framework.authtoken.models import Token\n"
            "u, _ = get_user_model().objects.get_or_create(username='stack', is_staff=True, is_superuser=True)\n"
            "print(Token.objects.get_or_create(user=u)[0].key)\n"
        )
        out = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", script],
            cwd=ROOT,
            env=self.env,
            check=True,
            timeout=120,
            capture_output=True,
            text=True,
        )
        self.token = out.stdout.strip().splitlines()[-1]

    def start(
        self, role: str, key: str | None = None, *, netns: str | None = None, **env: str
    ) -> subprocess.Popen:
        """Start one Procfile process; ``netns`` runs it on a host of its own (a network
        namespace, see tests/netns.py)."""
        key = key or role
        command = procfile()[role]
        if role == "worker":
            command += f" -n {self.name}-{key}@%h --without-mingle --without-gossip"
        prefix = ["ip", "netns", "exec", netns] if netns else []
        proc = subprocess.Popen(
            [*prefix, "bash", "-c", f"exec {command}"],
            cwd=ROOT,
            env={**self.env, **env},
            stdout=open(self.log_path(key), "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[key] = proc
        return proc

    def kill(self, key: str, sig: int = signal.SIGKILL) -> None:
        proc = self.processes.get(key)
        if proc and proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop(self) -> None:
        for key in list(self.processes):
            self.kill(key, signal.SIGTERM)

    def alive(self, key: str) -> bool:
        proc = self.processes.get(key)
        return proc is not None and proc.poll() is None

    def client(self, timeout: float = 10) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Token {self.token}"},
            timeout=timeout,
        )

    def wait_web(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base_url}/monitoring/live", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"web did not answer within {timeout}s; see {self.log_path('web')}")

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def call(
    client: httpx.Client, method: str, url: str, *, attempts: float = 60, **kw
) -> httpx.Response:
    """An API call retried while the stack is down or restarting (connection errors, 5xx), as
    a client with retries would: for up to ``attempts`` seconds."""
    deadline = time.monotonic() + attempts
    while True:
        try:
            response = client.request(method, url, **kw)
            if response.status_code < 500:
                return response
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            return response
        time.sleep(0.3)


def wait_finished(client: httpx.Client, ids: list[str], timeout: float = 180) -> dict[str, dict]:
    """Poll the API until every execution is terminal; returns their documents by id."""
    done: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(ids):
        for ex_id in ids:
            if ex_id in done:
                continue
            r = call(client, "GET", f"/api/executions/{ex_id}/")
            if r.status_code == 200 and r.json()["status"] in TERMINAL:
                done[ex_id] = r.json()
        if len(done) < len(ids):
            if time.monotonic() > deadline:
                missing = sorted(set(ids) - set(done))
                raise AssertionError(f"{len(missing)} executions unfinished: {missing[:5]}")
            time.sleep(0.5)
    return done
