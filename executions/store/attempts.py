"""What the node path records about an attempt for the history, at no extra query: the
worker's name (written by the claim) and a record of each retried attempt (written by the
UPDATE that schedules the retry)."""

from __future__ import annotations

import socket
from datetime import datetime
from typing import Any

from celery import current_task


def worker_name() -> str:
    """The Celery worker's node name (as Flower shows it), or the host outside a worker."""
    request = getattr(current_task, "request", None)
    hostname = getattr(request, "hostname", None) if request is not None else None
    return str(hostname or socket.gethostname())[:255]


def attempt_record(
    *,
    attempt: int,
    started_at: datetime | None,
    finished_at: datetime,
    worker: str,
    error: dict[str, Any] | None,
    wait_seconds: float,
) -> dict[str, Any]:
    return {
        "attempt": attempt,
        "started_at": started_at.isoformat() if started_at else None,
        "finished_at": finished_at.isoformat(),
        "worker": worker,
        "error": error,
        "wait_seconds": round(wait_seconds, 3),
    }
