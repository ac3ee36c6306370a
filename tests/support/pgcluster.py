"""A PostgreSQL server of the test's own, which the test may stop, crash and restart.

It uses the server binaries the ``pgserver`` package ships (a dev dependency), so it works on a
machine with no PostgreSQL installed. As root, the server runs as the unprivileged system user
pgserver creates for itself (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from weconnect.devstack import free_port, port_open


def _bin_dir() -> Path:
    from pgserver._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


class PgCluster:
    """initdb'd into a temporary directory; listens on ``host``:``port`` (TCP, trust auth)."""

    def __init__(self, *, host: str = "127.0.0.1", extra_hosts: tuple[str, ...] = ()) -> None:
        self.host = host
        self.listen = ",".join((host, *extra_hosts))
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="wc-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.user: str | None = None
        if os.geteuid() == 0:
            from pgserver.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            self.user = "pgserver"
            ensure_user_exists(self.user)
            ensure_prefix_permissions(self.dir)
            bins = _bin_dir()
            ensure_prefix_permissions(bins)
            import stat

            ensure_folder_permissions(
                bins.parent, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
            )
            self.dir.chmod(0o777)

    def _run(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(_bin_dir() / args[0]), *args[1:]],
            user=self.user,
            check=check,
            timeout=timeout,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.dir,
        )

    def init(self) -> PgCluster:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "utf8")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nlisten_addresses = '{self.listen}'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.dir}'\nmax_connections = 200\n"
                "fsync = off\nfull_page_writes = off\n"
            )
        with open(self.data / "pg_hba.conf", "a") as hba:
            hba.write("host all all 0.0.0.0/0 trust\n")
        return self

    def start(self) -> PgCluster:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self, mode: str = "fast") -> None:
        """``immediate`` is a crash: no checkpoint, clients cut off mid-statement."""
        self.stop(mode)
        self.start()

    def running(self) -> bool:
        return port_open(self.host, self.port)

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        return self.init().start()

    def __exit__(self, *exc) -> None:
        self.cleanup()
