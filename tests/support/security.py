"""Fixtures for the credential and egress tests (a pytest plugin): an encryption key shared with the worker
process, and a real HTTP server on 127.0.0.1 that records what it receives."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.fernet import Fernet
from django.conf import settings as django_settings

from tests.support.http import LocalServer

# The worker process inherits this environment when the session fixture starts it, which is
# after collection (when this module is imported), so it decrypts with the same keys as the
# test process.
os.environ.setdefault("WECONNECT_ENCRYPTION_KEYS", Fernet.generate_key().decode())
TEST_KEYS = [k.strip() for k in os.environ["WECONNECT_ENCRYPTION_KEYS"].split(",") if k.strip()]


# The settings of this process were read before this module was imported: point them at the
# same keys for the rest of the session (every test module's API calls may create credentials).
django_settings.WECONNECT_ENCRYPTION_KEYS = list(TEST_KEYS)


@pytest.fixture(autouse=True)
def encryption_keys(settings) -> list[str]:
    settings.WECONNECT_ENCRYPTION_KEYS = list(TEST_KEYS)
    return settings.WECONNECT_ENCRYPTION_KEYS


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode(errors="replace") if length else ""
        seen = {
            "method": self.command,
            "path": parts.path,
            "query": {k: v[0] for k, v in parse_qs(parts.query).items()},
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body,
        }
        self.server.record(parts.path, seen)
        query = seen["query"]
        if parts.path == "/redirect":
            self._reply(int(query.get("status", "302")), b"", {"Location": query["to"]})
        elif parts.path == "/echo":
            # Echoes everything back as JSON: headers (with credentials), query and body.
            self._reply(200, json.dumps(seen).encode(), {"Content-Type": "application/json"})
        elif parts.path == "/echo-text":
            text = "\n".join(f"{k}: {v}" for k, v in seen["headers"].items())
            self._reply(200, text.encode(), {"Content-Type": "text/plain; charset=utf-8"})
        elif parts.path == "/echo-500":
            self._reply(500, json.dumps(seen).encode(), {"Content-Type": "application/json"})
        elif parts.path.startswith("/need/"):
            header, expected = self.server.required[parts.path.removeprefix("/need/")]
            code = 200 if seen["headers"].get(header.lower()) == expected else 401
            self._reply(
                code,
                json.dumps({"ok": code == 200}).encode(),
                {"Content-Type": "application/json"},
            )
        else:
            self._reply(
                200,
                json.dumps({"host": seen["headers"].get("host")}).encode(),
                {"Content-Type": "application/json"},
            )

    def _reply(self, code: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve


@pytest.fixture
def http_server() -> Iterator[LocalServer]:
    with LocalServer(_Handler) as server:
        yield server


@pytest.fixture
def second_server() -> Iterator[LocalServer]:
    with LocalServer(_Handler) as server:
        yield server
