"""Start the machine's PostgreSQL and Redis if they are installed but not answering.

Used by `make test` and `make bench`. Nothing happens when they already answer, or when the
binaries are missing (the tests then start throwaway servers of their own)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time


def _open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait(port: int, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _open(port):
            return True
        time.sleep(0.2)
    return False


def ensure_postgres() -> None:
    if os.environ.get("DATABASE_URL") or _open(5432):
        return
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not versions or not shutil.which("pg_ctlcluster"):
        print(
            "PostgreSQL not installed here; the tests will start a throwaway one.", file=sys.stderr
        )
        return
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"], check=False
    )
    print("PostgreSQL started" if _wait(5432) else "PostgreSQL did not start", file=sys.stderr)


def ensure_redis() -> None:
    if os.environ.get("REDIS_URL") or _open(6379):
        return
    binary = shutil.which("redis-server")
    if not binary:
        print(
            "redis-server not installed here; the tests will start a throwaway one.",
            file=sys.stderr,
        )
        return
    subprocess.run(
        [
            binary,
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        check=False,
    )
    print("Redis started" if _wait(6379) else "Redis did not start", file=sys.stderr)


if __name__ == "__main__":
    if not os.environ.get("WECONNECT_TEST_EMBEDDED"):
        ensure_postgres()
        ensure_redis()
