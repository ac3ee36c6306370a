"""The Procfile's web process binds $PORT when it is set (Heroku, Dokku, honcho), WEB_BIND
otherwise: its line is expanded by a real shell, as those runners do."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from weconnect.devstack import stack_environment

ROOT = Path(__file__).resolve().parent.parent


def procfile(name: str) -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name} process in the Procfile")


def expand(command: str, **env: str) -> list[str]:
    """The arguments the shell would pass, with the command itself replaced by printf."""
    program, _, rest = command.partition(" ")
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PORT", "WEB_BIND", "WEB_HOST") and not k.startswith("WECONNECT_")
    }
    out = subprocess.run(
        ["sh", "-c", f"printf '%s\\n' {shlex.quote(program)} {rest}"],
        env={**base, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.splitlines()


def bind(**env: str) -> str:
    args = expand(procfile("web"), **env)
    return args[args.index("--bind") + 1]


@pytest.mark.parametrize(
    "env,expected",
    [
        ({}, "127.0.0.1:8000"),
        ({"WEB_BIND": "127.0.0.1:9100"}, "127.0.0.1:9100"),
        ({"PORT": "5123"}, "0.0.0.0:5123"),
        ({"PORT": "5123", "WEB_BIND": "127.0.0.1:9100"}, "0.0.0.0:5123"),
        ({"PORT": "5123", "WEB_HOST": "127.0.0.1"}, "127.0.0.1:5123"),
        ({"PORT": "", "WEB_BIND": "127.0.0.1:9100"}, "127.0.0.1:9100"),
    ],
)
def test_web_binds_port_when_set_else_web_bind(env, expected):
    assert bind(**env) == expected


def test_make_run_hands_its_address_to_honcho(tmp_path):
    # honcho sets PORT for every process; make run sets it (and WEB_HOST) to its own choice.
    env = stack_environment(
        {"PATH": os.environ["PATH"], "WEB_BIND": "127.0.0.1:9100", "SECRET_KEY": "x" * 50},
        var_dir=tmp_path,
        redis_url="redis://127.0.0.1:6379/0",
    )
    assert (env["PORT"], env["WEB_HOST"]) == ("9100", "127.0.0.1")
    assert bind(PORT=env["PORT"], WEB_HOST=env["WEB_HOST"], WEB_BIND=env["WEB_BIND"]) == (
        "127.0.0.1:9100"
    )


@pytest.mark.parametrize(
    "env,expected",
    [
        ({}, ["weconnect-workflow", "weconnect-node"]),
        ({"WECONNECT_QUEUE": "acme"}, ["acme-workflow", "acme-node"]),
        ({"WECONNECT_WORKFLOW_QUEUE": "wf", "WECONNECT_NODE_QUEUE": "nodes"}, ["wf", "nodes"]),
    ],
)
def test_worker_consumes_both_queues_as_settings_name_them(env, expected):
    args = expand(procfile("worker"), **env)
    assert args[args.index("-Q") + 1].split(",") == expected
