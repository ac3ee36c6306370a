"""Waits for the outside world: opening a ``wait_for_event`` node run's wait, resuming it at
most once, timing it out, and the run's resume link.

At most once: every way of resuming (the API, the resume link, a matching event, the admin's
buttons) and the time-out end in the same compare-and-set on the wait row,
``UPDATE ... WHERE outcome IS NULL``; the first one to commit wins and every other one finds
the row decided. The payload and the wake of the run are one transaction (engine/wake.py).

Resuming is in executions/events/resume.py (it wakes the run through the engine; this module
stays below the engine, for the node type and templates).

An event that arrives before its waiter: both sides write first and read second. The event
is committed before waits are looked up, and a wait is committed before retained events are
looked up, so whichever reads last sees the other (READ COMMITTED).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac
from jsonschema import Draft202012Validator

from executions.errors import Conflict
from executions.events.models import Event, EventWait
from executions.models import NodeRun
from executions.states import NodeRunStatus

N = NodeRunStatus
WAIT_NODE_TYPE = "wait_for_event"
_RESUME_SALT = "weconnect.resume-link"


class NotWaiting(Conflict):
    """The node is not waiting (not started, already resumed, timed out, or stopped)."""


class PayloadInvalid(Exception):
    """The payload does not fit the node's schema (answered as 400)."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


# --- resume links ----------------------------------------------------------------------------


def resume_token(execution_id, node: str) -> str:
    """An HMAC of the execution id and node key under SECRET_KEY: unguessable without the key,
    good for that one node run only, and stored nowhere."""
    return salted_hmac(_RESUME_SALT, f"{execution_id}:{node}", algorithm="sha256").hexdigest()


def resume_token_valid(execution_id, node: str, token: str | None) -> bool:
    return constant_time_compare(resume_token(execution_id, node), token or "")


def resume_url(execution_id, node: str) -> str:
    path = reverse(
        "resume-link",
        kwargs={
            "execution_id": str(execution_id),
            "node": node,
            "token": resume_token(execution_id, node),
        },
    )
    return settings.WECONNECT_PUBLIC_URL + path


def resume_urls(execution_id) -> dict[str, str]:
    """The resume link of every ``wait_for_event`` node of the execution, by node key."""
    nodes = NodeRun.objects.filter(execution_id=execution_id, node_type=WAIT_NODE_TYPE).order_by(
        "id"
    )
    return {n: resume_url(execution_id, n) for n in nodes.values_list("node", flat=True)}


def default_resume_node(execution_id) -> str | None:
    """The node ``{{ execution.resume_url }}`` points at: the first ``wait_for_event`` node
    (in workflow order) that has not finished yet, else the first one."""
    runs = list(
        NodeRun.objects.filter(execution_id=execution_id, node_type=WAIT_NODE_TYPE)
        .order_by("id")
        .values_list("node", "status")
    )
    for node, status in runs:
        if status in (N.PENDING, N.QUEUED, N.RUNNING, N.RETRYING):
            return node
    return runs[0][0] if runs else None


# --- payloads --------------------------------------------------------------------------------


def payload_errors(schema: Any, payload: Any) -> list[str]:
    """Every reason ``payload`` does not fit ``schema`` (none without a schema)."""
    if not schema:
        return []
    errors = []
    for err in sorted(
        Draft202012Validator(schema).iter_errors(payload), key=lambda e: list(e.path)
    ):
        where = "data" + "".join(f"[{p!r}]" if isinstance(p, str) else f"[{p}]" for p in err.path)
        errors.append(f"{where}: {err.message}")
    return errors


# --- opening, resuming, timing out ----------------------------------------------------------


def retained_event(*, owner_id: int, name: str, key: str | None, now) -> Event | None:
    """The latest event of this name (and key, when the wait has one) still within
    WECONNECT_EVENT_RETENTION."""
    since = now - timedelta(seconds=settings.WECONNECT_EVENT_RETENTION)
    events = Event.objects.filter(owner_id=owner_id, name=name, created_at__gte=since)
    if key is not None:
        events = events.filter(key=key)
    return events.order_by("-created_at").first()


def wait_open(
    *,
    node_run_id: int,
    execution_id,
    owner_id: int,
    node: str,
    name: str,
    key: str | None,
    schema: Any,
    until,
    now=None,
) -> EventWait:
    """Open the wait of a node run (once: a redelivered first run finds the same row), then
    take a matching event that arrived before it, if one is retained and fits the schema."""
    now = now or timezone.now()
    wait, _ = EventWait.objects.get_or_create(
        node_run_id=node_run_id,
        defaults={
            "execution_id": execution_id,
            "owner_id": owner_id,
            "node": node,
            "name": name,
            "key": key,
            "schema": schema or None,
            "until": until,
        },
    )
    if wait.outcome is not None:
        return wait
    # The wait row is committed (autocommit) before this read: see the module docstring.
    event = retained_event(owner_id=owner_id, name=name, key=key, now=now)
    if event is not None and not payload_errors(wait.schema, event.data):
        # The run is this very worker's: store the payload, no wake needed.
        EventWait.objects.filter(pk=wait.pk, outcome__isnull=True).update(
            outcome=EventWait.Outcome.RESUMED,
            payload=event.data,
            source=EventWait.Source.EVENT,
            event=event,
            resolved_at=now,
        )
        wait.refresh_from_db()
    return wait


def wait_time_out(*, wait: EventWait, now=None) -> EventWait:
    """Close a wait whose time is up, unless a resume got there first; returns the row as
    decided (``outcome`` resumed or timed_out)."""
    now = now or timezone.now()
    EventWait.objects.filter(pk=wait.pk, outcome__isnull=True).update(
        outcome=EventWait.Outcome.TIMED_OUT, resolved_at=now
    )
    wait.refresh_from_db()
    return wait
