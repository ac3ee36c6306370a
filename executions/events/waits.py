"""Waits for the outside world: opening a ``wait_for_event`` node run's wait, resuming it at
most once, timing it out, and the run's resume link.

At most once: every way of resuming (the API, the resume link, a matching event, the admin's
buttons) and the time-out end in the same compare-and-set on the wait row,
``UPDATE ... WHERE outcome IS NULL``; the first one to commit wins and every other one finds
the row decided. The payload and the wake of the run are one transaction (engine/wake.py).

An event that arrives before its waiter: both sides write first and read second. The event
is committed before waits are looked up, and a wait is committed before retained events are
looked up, so whichever reads last sees the other (READ COMMITTED).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac
from jsonschema import Draft202012Validator

from executions.engine.wake import node_run_wake_locked
from executions.events.models import Event, EventWait
from executions.models import Execution, NodeRun
from executions.services.executions import Conflict
from executions.states import EXECUTION_ACTIVE, NodeRunStatus

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


def wait_resume(
    *,
    wait: EventWait,
    payload: Any,
    source: str,
    event: Event | None = None,
    now=None,
) -> bool:
    """Store ``payload`` as the wait's outcome and wake its run, in one transaction. Returns
    False when another resume, the time-out or a cancel got there first (or the execution is
    no longer active): the payload is then not stored."""
    return bool(waits_resume(waits=[wait], payload=payload, source=source, event=event, now=now))


# Waits resumed per transaction by one event: one commit for many, without holding many row
# locks for long.
RESUME_CHUNK = 100


def waits_resume(
    *,
    waits: list[EventWait],
    payload: Any,
    source: str,
    event: Event | None = None,
    now=None,
) -> list[EventWait]:
    """:func:`wait_resume` for many waits (an event matching many waiters); returns the ones
    this call resumed. Locks are taken wait row first, then its node run row, everywhere,
    so concurrent resumes cannot deadlock."""
    now = now or timezone.now()
    resumed: list[EventWait] = []
    for i in range(0, len(waits), RESUME_CHUNK):
        with transaction.atomic():
            for wait in waits[i : i + RESUME_CHUNK]:
                if _resume_one(wait, payload, source, event, now):
                    node_run_wake_locked(node_run_id=wait.node_run_id, now=now)
                    resumed.append(wait)
    return resumed


def _resume_one(wait: EventWait, payload: Any, source: str, event: Event | None, now) -> bool:
    return bool(
        EventWait.objects.filter(
            Q(pk=wait.pk)
            & Q(outcome__isnull=True)
            & Q(until__gt=now)
            # Subqueries, not joins: the wait row's own conditions are rechecked on its
            # committed version when a concurrent resume holds the row (see runner._claim).
            & Q(
                execution_id__in=Execution.objects.filter(
                    id=wait.execution_id, status__in=EXECUTION_ACTIVE
                ).values("id")
            )
            & Q(
                node_run_id__in=NodeRun.objects.filter(
                    id=wait.node_run_id, status__in=[N.QUEUED, N.RUNNING]
                ).values("id")
            )
        ).update(
            outcome=EventWait.Outcome.RESUMED,
            payload=payload,
            source=source,
            event=event,
            resolved_at=now,
        )
    )


def wait_time_out(*, wait: EventWait, now=None) -> EventWait:
    """Close a wait whose time is up, unless a resume got there first; returns the row as
    decided (``outcome`` resumed or timed_out)."""
    now = now or timezone.now()
    EventWait.objects.filter(pk=wait.pk, outcome__isnull=True).update(
        outcome=EventWait.Outcome.TIMED_OUT, resolved_at=now
    )
    wait.refresh_from_db()
    return wait


def execution_wait(*, execution: Execution, node: str | None) -> EventWait:
    """The wait of ``node`` of the execution (or its only waiting node when ``node`` is
    None). Raises NotWaiting when that node is not waiting."""
    waits = EventWait.objects.filter(execution=execution, outcome__isnull=True)
    if node is None:
        found = list(waits[:2])
        if len(found) != 1:
            names = ", ".join(w.node for w in found) or "none"
            raise NotWaiting(
                "name the node to resume" + (f" (waiting: {names})" if found else ": no node waits")
            )
        return found[0]
    wait = waits.filter(node=node).first()
    if wait is None:
        if not NodeRun.objects.filter(execution=execution, node=node).exists():
            raise NotWaiting(f"execution has no node {node!r}")
        decided = EventWait.objects.filter(execution=execution, node=node).first()
        if decided is not None and decided.outcome == EventWait.Outcome.RESUMED:
            raise NotWaiting(f"node {node!r} was already resumed ({decided.source})")
        if decided is not None and decided.outcome == EventWait.Outcome.TIMED_OUT:
            raise NotWaiting(f"node {node!r} timed out waiting")
        raise NotWaiting(f"node {node!r} is not waiting")
    return wait


def execution_resume(
    *, execution: Execution, node: str | None, data: Any, source: str, now=None
) -> EventWait:
    """Resume the waiting node ``node`` of ``execution`` with ``data``. Raises NotWaiting
    (409) when it is not waiting, PayloadInvalid (400) when ``data`` does not fit its schema."""
    now = now or timezone.now()
    if execution.status not in EXECUTION_ACTIVE:
        raise NotWaiting(f"execution is {execution.status}")
    wait = execution_wait(execution=execution, node=node)
    errors = payload_errors(wait.schema, data)
    if errors:
        raise PayloadInvalid(errors)
    if wait.until <= now:
        raise NotWaiting(f"node {wait.node!r} timed out waiting")
    if not wait_resume(wait=wait, payload=data, source=source, now=now):
        wait.refresh_from_db()
        execution.refresh_from_db(fields=["status"])
        if wait.outcome == EventWait.Outcome.RESUMED:
            raise NotWaiting(f"node {wait.node!r} was already resumed ({wait.source})")
        if wait.outcome == EventWait.Outcome.TIMED_OUT or wait.until <= now:
            raise NotWaiting(f"node {wait.node!r} timed out waiting")
        raise NotWaiting(f"node {wait.node!r} is not waiting (execution {execution.status})")
    wait.refresh_from_db()
    return wait
