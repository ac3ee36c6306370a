"""A misconfigured process fails at start, with a message naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The variables the settings read, cleared so each case starts from the defaults.
_CLEARED = ("DEBUG", "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS", "TIME_ZONE")


def start(**env: str) -> subprocess.CompletedProcess:
    base = {
        k: v for k, v in os.environ.items() if k not in _CLEARED and not k.startswith("WECONNECT_")
    }
    base.update(SECRET_KEY="x" * 50, DJANGO_SETTINGS_MODULE="weconnect.settings")
    for key, value in env.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('started')"],
        cwd=ROOT,
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_fails(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "ImproperlyConfigured" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    for fragment in fragments:
        assert fragment in last, last


def test_defaults_start():
    result = start()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "started"


@pytest.mark.parametrize(
    "env,fragments",
    [
        (
            {"WECONNECT_LEASE_SECONDS": "abc"},
            ("WECONNECT_LEASE_SECONDS='abc' is not a whole number",),
        ),
        (
            {"WECONNECT_LEASE_SECONDS": "1"},
            ("WECONNECT_LEASE_SECONDS=1 is below the minimum of 3",),
        ),
        (
            {"WECONNECT_HEARTBEAT_SECONDS": "often"},
            ("WECONNECT_HEARTBEAT_SECONDS='often' is not a number",),
        ),
        ({"DEBUG": "maybe"}, ("DEBUG='maybe' is not a boolean",)),
        ({"DATABASE_URL": "foo://"}, ("DATABASE_URL has an unsupported scheme: 'foo'",)),
        ({"DATABASE_URL": "not a url at all"}, ("DATABASE_URL",)),
        (
            {"REDIS_URL": "http://127.0.0.1:6379"},
            ("REDIS_URL='http://127.0.0.1:6379' must start with redis://",),
        ),
        ({"TIME_ZONE": "Mars/Olympus"}, ("TIME_ZONE='Mars/Olympus' is not a known time zone",)),
        (
            {"WECONNECT_LOG_FORMAT": "xml"},
            ("WECONNECT_LOG_FORMAT='xml' must be one of text, json",),
        ),
        (
            {"WECONNECT_MAX_REQUEST_BYTES": "10"},
            ("WECONNECT_MAX_REQUEST_BYTES=10 is below the minimum of 1024",),
        ),
        (
            {"WECONNECT_PUBLIC_URL": "weconnect.example"},
            (
                "WECONNECT_PUBLIC_URL='weconnect.example' must be an absolute http:// or https:// URL",
            ),
        ),
        (
            {"WECONNECT_EVENT_RETENTION": "-1"},
            ("WECONNECT_EVENT_RETENTION=-1 is below the minimum of 0",),
        ),
        (
            {"WECONNECT_MAX_ETA_SECONDS": "100", "WECONNECT_VISIBILITY_TIMEOUT": "120"},
            ("WECONNECT_MAX_ETA_SECONDS must be at most half of WECONNECT_VISIBILITY_TIMEOUT",),
        ),
    ],
)
def test_a_bad_value_fails_naming_the_variable(env, fragments):
    assert_fails(start(**env), *fragments)


def test_secret_key_is_required_without_debug():
    assert_fails(start(SECRET_KEY=None), "SECRET_KEY must be set unless DEBUG=true")
    assert_fails(start(SECRET_KEY="", DEBUG="false"), "SECRET_KEY must be set unless DEBUG=true")


def test_debug_runs_without_a_secret_key():
    result = start(SECRET_KEY=None, DEBUG="true")
    assert result.returncode == 0, result.stderr


def test_values_are_read():
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.WECONNECT_LEASE_SECONDS, s.DEBUG, s.DATABASES['default']['ENGINE'], s.ALLOWED_HOSTS)"
    )
    base = {
        k: v for k, v in os.environ.items() if k not in _CLEARED and not k.startswith("WECONNECT_")
    }
    base.update(
        SECRET_KEY="x" * 50,
        WECONNECT_LEASE_SECONDS=" 12 ",
        DEBUG="no",
        DATABASE_URL="postgres://u:p@db.example:5432/wc",
        ALLOWED_HOSTS="a.example, b.example",
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=base, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().split(maxsplit=3) == [
        "12",
        "False",
        "django.db.backends.postgresql",
        "['a.example', 'b.example']",
    ]


def test_a_socket_directory_in_the_database_url_is_decoded():
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "d = s.DATABASES['default']; print(d['HOST'], d['NAME'], d['USER'])"
    )
    base = {
        k: v for k, v in os.environ.items() if k not in _CLEARED and not k.startswith("WECONNECT_")
    }
    base.update(SECRET_KEY="x" * 50, DATABASE_URL="postgres://postgres@%2Frun%2Fpostgresql/wc")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=base, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["/run/postgresql", "wc", "postgres"]


def test_readme_documents_every_variable_the_settings_read():
    import re

    source = (ROOT / "weconnect" / "settings.py").read_text()
    names = set(re.findall(r"""env_[a-z_]+\(\s*["']([A-Z][A-Z0-9_]*)["']""", source))
    assert {"DEBUG", "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "WECONNECT_LEASE_SECONDS"} <= names
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", readme, flags=re.M))
    assert sorted(names - documented) == [], "add these to the configuration table in README.md"
