"""Fixtures for the monitoring tests: unreachable and hanging dependencies, Beat's record."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone

__all__ = ["beat_ran", "closed_port", "hanging_port"]


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def hanging_port() -> Iterator[int]:
    """A server that accepts connections and never answers: every read on them blocks."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=2)
    for conn in held:
        conn.close()
    server.close()


@pytest.fixture
def beat_ran():
    """Beat's record of the recovery task as Beat writes it (django_celery_beat's tables)."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    def record(ago: timedelta | None = timedelta(seconds=5)) -> PeriodicTask:
        every, _ = IntervalSchedule.objects.get_or_create(every=10, period=IntervalSchedule.SECONDS)
        task, _ = PeriodicTask.objects.update_or_create(
            name="weconnect-recovery",
            defaults={
                "task": "weconnect.recovery",
                "interval": every,
                "last_run_at": None if ago is None else timezone.now() - ago,
            },
        )
        return task

    return record
