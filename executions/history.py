"""The history of an execution's node runs, as a list of events in time order.

Derived from the node-run rows, which the engine already writes on every hop, so keeping it
costs the hot path nothing: queued; each attempt that failed and was retried, from the run's
``attempt_log`` (start, end, worker, error and the backoff that followed, appended by the same
UPDATE that schedules the retry); the last attempt's start and worker (written by the claim)
and its end (or skip or cancel). Acts on the
execution itself (pause, unpause) are rows of ExecutionEvent, written with the act.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from executions.states import NodeRunStatus

N = NodeRunStatus


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def node_run_history(run) -> list[dict[str, Any]]:
    """Events of one node run, oldest first: ``{"at", "node", "event", "attempt", ...}``.
    ``at`` is None where the rows keep no time (an earlier attempt of a retried run)."""
    events: list[dict[str, Any]] = []

    def add(event: str, at: datetime | None, **extra: Any) -> None:
        events.append({"at": _iso(at), "node": run.node, "event": event, **extra})

    if run.queued_at:
        add("queued", run.queued_at)
    delays = list(run.retry_delays or [])
    log = list(getattr(run, "attempt_log", None) or [])
    last_error = run.error if isinstance(run.error, dict) else None
    if log:
        # Each retried attempt as recorded when its retry was scheduled.
        for entry in log:
            add(
                "started",
                _parse(entry.get("started_at")),
                attempt=entry.get("attempt"),
                worker=entry.get("worker"),
            )
            finished = _parse(entry.get("finished_at"))
            add(
                "attempt_failed",
                finished,
                attempt=entry.get("attempt"),
                worker=entry.get("worker"),
                error=entry.get("error"),
            )
            wait = float(entry.get("wait_seconds") or 0)
            add(
                "retry_wait",
                finished,
                attempt=entry.get("attempt"),
                seconds=wait,
                until=_iso(finished + timedelta(seconds=wait)) if finished else None,
            )
    else:
        # Rows written before attempts were recorded: the delays alone, without times.
        for i, delay in enumerate(delays, start=1):
            retried_error = last_error if run.status == N.RETRYING and i == len(delays) else None
            add("attempt_failed", None, attempt=i, error=retried_error)
            add("retry_wait", None, attempt=i, seconds=float(delay))
    if run.started_at and run.attempts and run.status != N.RETRYING:
        add(
            "started",
            run.started_at,
            attempt=run.attempts,
            task_id=run.task_id,
            worker=getattr(run, "worker", "") or None,
        )
    if run.finished_at:
        if run.status in (N.SUCCEEDED, N.FAILED):
            extra: dict[str, Any] = {"attempt": run.attempts}
            if run.status == N.FAILED:
                extra["error"] = last_error
            add(run.status, run.finished_at, **extra)
        elif run.status in (N.SKIPPED, N.CANCELLED):
            add(run.status, run.finished_at)
    elif run.status == N.QUEUED and run.next_attempt_at and run.started_at:
        add("waiting", run.next_attempt_at, until=_iso(run.next_attempt_at), state=run.state)
    return events


def execution_events(execution, runs, recorded=()) -> list[dict[str, Any]]:
    """Every node run's events and the ``recorded`` ExecutionEvent rows (pause, unpause),
    oldest first (events without a time stay beside their run)."""
    events: list[dict[str, Any]] = [
        {"at": _iso(execution.created_at), "node": None, "event": "created"}
    ]
    for run in runs:
        events += node_run_history(run)
    for row in recorded:
        events.append(
            {
                "at": _iso(row.at),
                "node": row.node,
                "event": row.event,
                "actor": row.actor,
                **row.data,
            }
        )
    if execution.started_at:
        events.append({"at": _iso(execution.started_at), "node": None, "event": "started"})
    if execution.finished_at:
        events.append(
            {
                "at": _iso(execution.finished_at),
                "node": None,
                "event": execution.status,
                "error": execution.error,
            }
        )
    # A stable sort by time; untimed events take the time of the event before them.
    last = events[0]["at"]
    keyed = []
    for i, e in enumerate(events):
        last = e["at"] or last
        keyed.append((last, i, e))
    # "created" stays first: the start nodes' queue time is taken a moment before the row's.
    created, rest = keyed[0][2], keyed[1:]
    return [created] + [e for _, _, e in sorted(rest, key=lambda t: (t[0] or "", t[1]))]
