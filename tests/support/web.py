"""A real gunicorn process serving weconnect.wsgi:application against the test database, and a
raw HTTP/1.1 client for requests the Django test client cannot make (chunked bodies)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.environment import RUN_ID
from tests.support.worker import database_url_for_workers
from weconnect.devstack import free_port, port_open

__all__ = ["WebServer", "web_server"]

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class WebServer:
    port: int
    process: subprocess.Popen
    log: Path

    def request(
        self, method: str, path: str, body_chunks: list[bytes] | None = None, headers=None
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on a fresh connection; with ``body_chunks`` the body is sent with
        Transfer-Encoding: chunked, one HTTP chunk per item. Returns status, headers, body."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body_chunks is not None:
            lines.append("Transfer-Encoding: chunked")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            sock.sendall(head)
            try:
                for chunk in body_chunks or []:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                if body_chunks is not None:
                    sock.sendall(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered (413) before reading everything
            data = b""
            while True:
                try:
                    part = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not part:
                    break
                data += part
        head, _, payload = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        found = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            found[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), found, payload


@pytest.fixture
def web_server(transactional_db) -> Iterator[WebServer]:
    """gunicorn as the Procfile runs it (one process, threads), on a free port."""
    port = free_port()
    log = ROOT / "var" / f"test-web-{RUN_ID}.log"
    log.parent.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_workers(),
        "ALLOWED_HOSTS": "127.0.0.1",
        "DEBUG": "false",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "weconnect.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--threads",
            "2",
        ],
        cwd=ROOT,
        env=env,
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not port_open("127.0.0.1", port, timeout=0.2):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"gunicorn did not start; see {log}")
        time.sleep(0.1)
    yield WebServer(port=port, process=process, log=log)
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
