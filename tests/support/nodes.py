"""For the node-library tests: the routes of the local HTTP server they call, and the
functions the ``python`` node type may call in tests (importable by the worker process)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from executions.nodes import NodeError
from tests.support.http import LocalServer

# Functions on the python node's allow-list in these tests (WECONNECT_PYTHON_NODES).
PYTHON_NODES = "tests.support.nodes.double,tests.support.nodes.describe_context"


def double(value):
    return {"n": value["n"] * 2}


def describe_context(ctx):
    if ctx.input.get("fail"):
        raise NodeError("asked to fail", retryable=False)
    if "return" in ctx.input:
        return ctx.input["return"]
    if ctx.input.get("return_nan"):
        return {"x": float("nan")}
    if ctx.input.get("return_object"):
        return {"when": object()}
    if ctx.input.get("return_tuple"):
        return {"pair": (1, "a\x00")}
    return {"attempt": ctx.attempt, "node": ctx.node.key, "input": ctx.input, "depth": ctx.depth}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LocalServer

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _send(
        self, code: int, body: bytes, content_type: str = "application/json", headers=None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, doc, headers=None) -> None:
        self._send(code, json.dumps(doc).encode(), headers=headers)

    def _route(self) -> None:
        url = urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        hits = self.server.record(
            url.path,
            {
                "method": self.command,
                "path": url.path,
                "query": parse_qs(url.query),
                "headers": dict(self.headers),
                "body": body.decode(errors="replace"),
            },
        )
        name = parts[0]
        if name == "echo":
            try:
                parsed = json.loads(body) if body else None
            except ValueError:
                parsed = None
            self._json(
                200,
                {
                    "method": self.command,
                    "query": parse_qs(url.query),
                    "json": parsed,
                    "raw": body.decode(errors="replace"),
                    "content_type": self.headers.get("Content-Type"),
                    "x_test": self.headers.get("X-Test"),
                },
            )
        elif name == "flaky":  # /flaky/<key>: 503 twice, then 200
            if hits <= 2:
                self._json(503, {"hit": hits})
            else:
                self._json(200, {"ok": True, "hit": hits})
        elif name == "status":  # /status/<code>
            self._json(int(parts[1]), {"code": int(parts[1])})
        elif name == "slow":
            time.sleep(float(parts[1]) if len(parts) > 1 else 2.0)
            self._json(200, {"slow": True})
        elif name == "retry-after":  # /retry-after/<key>/<seconds|date>: 429 once, then 200
            if hits == 1:
                if parts[2] == "date":
                    value = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
                else:
                    value = parts[2]
                self._json(429, {"slow_down": True}, headers={"Retry-After": value})
            else:
                self._json(200, {"ok": True, "hit": hits})
        elif name == "text":
            self._send(200, "plain text, ünïcode".encode(), "text/plain; charset=utf-8")
        elif name == "bad-json":
            self._send(200, b"{not json", "application/json")
        elif name == "nan-json":
            self._send(200, b'{"a": NaN}', "application/json")
        elif name == "nul-json":
            self._send(200, b'{"a": "x\\u0000y"}', "application/json")
        elif name == "nul-text":
            self._send(200, b"a\x00b", "application/octet-stream")
        elif name == "big":  # /big/<bytes>, without Content-Length: must be cut while streaming
            size = int(parts[1])
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"x" * 65536
            sent = 0
            try:
                while sent < size:
                    piece = chunk[: min(len(chunk), size - sent)]
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    sent += len(piece)
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading, as it should
        else:
            self._json(404, {"error": "no such route"})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _route


def serve_http() -> Iterator[LocalServer]:
    """Body of a fixture: a LocalServer of these routes serving until the fixture ends."""
    with LocalServer(_Handler) as server:
        yield server
