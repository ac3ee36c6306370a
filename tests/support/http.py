"""The one local HTTP server of the tests: a real server on 127.0.0.1 (a free port) serving a
handler class from a thread. Handlers record what they receive with :meth:`record`."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LocalServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        handler: type[BaseHTTPRequestHandler],
        *,
        wrap_socket: Callable[[Any], Any] | None = None,
    ):
        """``wrap_socket`` replaces the listening socket (a TLS server: ``ctx.wrap_socket``
        with ``server_side=True``)."""
        super().__init__(("127.0.0.1", 0), handler)
        if wrap_socket is not None:
            self.socket = wrap_socket(self.socket)
        self.port = self.server_address[1]
        self.lock = threading.Lock()
        self.hits: Counter[str] = Counter()
        self.requests: list[dict[str, Any]] = []
        # Routes that answer 200 only when a request carries a header: {name: (header, value)}.
        self.required: dict[str, tuple[str, str]] = {}
        self._thread: threading.Thread | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def record(self, path: str, item: dict[str, Any]) -> int:
        """Keep what a request carried; returns how many requests ``path`` has had."""
        with self.lock:
            self.requests.append(item)
            self.hits[path] += 1
            return self.hits[path]

    def paths(self) -> list[str]:
        with self.lock:
            return [r["path"] for r in self.requests]

    def start(self) -> LocalServer:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
