"""Receiving events: resume the waits that match, start the workflows they trigger, keep
them for late waiters, and the per-user event webhook.

Delivery order matters (the event-before-waiter race, executions/events/waits.py): the event
row is committed first, then the open waits are looked up. Each step after that is
idempotent (a wait is resumed by a compare-and-set, a workflow started with the idempotency
key ``event:<event uuid>``), so a duplicate delivery arriving while the first is still being
processed may safely process it again, and answers what the first one recorded.
"""

from __future__ import annotations

import hmac
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from executions.engine.start import execution_create
from executions.events.models import Event, EventTrigger, EventWait, EventWebhook
from executions.events.resume import waits_resume
from executions.events.triggers import event_filter_matches
from executions.events.waits import payload_errors
from executions.states import Trigger

log = logging.getLogger("weconnect.events")

_DUMMY_HASH = EventWebhook.hash_token(EventWebhook.new_token())


@dataclass
class Delivery:
    event: Event
    created: bool  # False: a duplicate of an earlier delivery with the same id

    @property
    def result(self) -> dict[str, Any]:
        return self.event.result or {"started": [], "resumed": [], "not_resumed": []}


def event_document(event: Event) -> dict[str, Any]:
    """The event as workflows see it (their input) and filters read it."""
    return {
        "id": event.event_id if event.event_id is not None else str(event.id),
        "name": event.name,
        "key": event.key,
        "data": event.data,
        "received_at": event.created_at.isoformat(),
    }


def event_deliver(
    *, owner, name: str, key: str | None, data: Any, event_id: str | None = None
) -> Delivery:
    """Record an event of ``owner`` and act on it: resume every open wait of that owner whose
    event name and key match, start every active workflow whose ``events`` lists the name
    (and whose filter lets it through). The same ``event_id`` again does nothing new and
    answers with what the first delivery did."""
    if event_id is not None:
        existing = Event.objects.filter(owner=owner, event_id=event_id).first()
        if existing is not None and existing.result is not None:
            return Delivery(existing, created=False)
    try:
        # Its own transaction, committed before the waits are read (see the module docstring).
        with transaction.atomic():
            event = Event.objects.create(
                owner=owner, name=name, key=key, data=data, event_id=event_id
            )
        created = True
    except IntegrityError:
        if event_id is None:
            raise
        # A concurrent delivery with the same id committed first.
        event = Event.objects.get(owner=owner, event_id=event_id)
        if event.result is not None:
            return Delivery(event, created=False)
        created = False
    result = _process(event)
    Event.objects.filter(pk=event.pk, result__isnull=True).update(result=result)
    event.refresh_from_db(fields=["result"])
    log.info(
        "event delivered",
        extra={
            "event": str(event.id),
            "event_name": name,
            "started": len(event.result["started"]),
            "resumed": len(event.result["resumed"]),
        },
    )
    return Delivery(event, created=created)


def _process(event: Event) -> dict[str, Any]:
    now = timezone.now()
    not_resumed = []
    waits = (
        EventWait.objects.filter(owner_id=event.owner_id, name=event.name, outcome__isnull=True)
        .filter(Q(key__isnull=True) | Q(key=event.key))
        .order_by("id")
    )
    fitting = []
    for wait in waits:
        errors = payload_errors(wait.schema, event.data)
        if errors:
            not_resumed.append(
                {"execution": str(wait.execution_id), "node": wait.node, "reason": errors}
            )
        else:
            fitting.append(wait)
    waits_resume(
        waits=fitting, payload=event.data, source=EventWait.Source.EVENT, event=event, now=now
    )
    # Read back rather than counted: a repeated processing of the same event reports the
    # waits the first one resumed.
    resumed = [
        {"execution": str(execution_id), "node": node}
        for execution_id, node in EventWait.objects.filter(event=event)
        .order_by("id")
        .values_list("execution_id", "node")
    ]
    doc = event_document(event)
    started = []
    seen: set = set()
    triggers = (
        EventTrigger.objects.filter(
            owner_id=event.owner_id, name=event.name, workflow__is_active=True
        )
        .select_related("workflow")
        .order_by("id")
    )
    for trigger in triggers:
        if trigger.workflow_id in seen or not event_filter_matches(trigger.filter, doc):
            continue
        seen.add(trigger.workflow_id)
        execution, _ = execution_create(
            workflow=trigger.workflow,
            input=doc,
            trigger=Trigger.EVENT,
            idempotency_key=f"event:{event.id}",
        )
        started.append({"execution": str(execution.id), "workflow": str(trigger.workflow_id)})
    return {"started": started, "resumed": resumed, "not_resumed": not_resumed}


# --- the per-user event webhook --------------------------------------------------------------


class EventWebhookNotFound(Exception):
    """Unknown webhook id or a wrong token (answered as 404)."""


def event_webhook_rotate(*, owner) -> tuple[EventWebhook, str]:
    """Give ``owner`` a new event webhook token (the old one stops working at once); the
    webhook's id, and so its URL, stays. Returns the webhook and the token, shown only here."""
    token = EventWebhook.new_token()
    hook, _ = EventWebhook.objects.update_or_create(
        owner=owner, defaults={"token_hash": EventWebhook.hash_token(token)}
    )
    return hook, token


def event_webhook_owner(*, webhook_id: str, token: str | None):
    """The owner whose event webhook ``token`` opens, or EventWebhookNotFound. Every way of
    failing looks the same and takes the same time (compare_digest, also against a dummy)."""
    try:
        pk = uuid.UUID(str(webhook_id))
    except ValueError:
        pk = None
    hook = EventWebhook.objects.select_related("owner").filter(id=pk).first() if pk else None
    expected = hook.token_hash if hook is not None else _DUMMY_HASH
    given = EventWebhook.hash_token(token or "")
    if not hmac.compare_digest(given.encode(), expected.encode()) or hook is None or not token:
        raise EventWebhookNotFound()
    if not hook.owner.is_active:
        raise EventWebhookNotFound()
    return hook.owner


# --- retention -------------------------------------------------------------------------------


def event_retention_sweep(*, now=None, batch: int | None = None, max_batches: int = 100) -> int:
    """Delete events older than WECONNECT_EVENT_RETENTION (waits never read them anyway)."""
    now = now or timezone.now()
    batch = batch or settings.WECONNECT_SWEEP_BATCH
    cutoff = now - timedelta(seconds=settings.WECONNECT_EVENT_RETENTION)
    deleted = 0
    for _ in range(max_batches):
        ids = list(
            Event.objects.filter(created_at__lt=cutoff)
            .order_by("created_at")
            .values_list("id", flat=True)[:batch]
        )
        if not ids:
            break
        count, _ = Event.objects.filter(id__in=ids, created_at__lt=cutoff).delete()
        deleted += count
        if len(ids) < batch:
            break
    if deleted:
        log.info("event retention", extra={"deleted_rows": deleted})
    return deleted
