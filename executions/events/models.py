"""Events, the waits that listen for them, the workflows they start, and each user's event
webhook (executions/events/services.py)."""

from __future__ import annotations

import hashlib
import secrets
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class Event(models.Model):
    """An event received through POST /api/events/ (or the owner's event webhook).

    Kept WECONNECT_EVENT_RETENTION seconds, so that a wait which begins after its event was
    delivered still finds it. ``event_id`` is the sender's id: the same id again for the same
    owner is the same delivery (a unique constraint decides, also for concurrent requests)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="events"
    )
    name = models.CharField(max_length=200)
    key = models.CharField(max_length=255, null=True, blank=True)
    data = models.JSONField(default=dict, blank=True)
    event_id = models.CharField(max_length=255, null=True, blank=True)
    # What the delivery did ({"started": [...], "resumed": [...]}), answered again to a
    # duplicate; null while the first delivery is still being processed.
    result = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "event_id"],
                condition=Q(event_id__isnull=False),
                name="event_id_unique_per_owner",
            )
        ]
        indexes = [
            # A wait that begins looks for the latest retained event of its name and key.
            models.Index(fields=["owner", "name", "key", "-created_at"], name="event_lookup"),
        ]

    def __str__(self) -> str:
        return f"{self.name} [{self.key}]"


class EventWait(models.Model):
    """The wait of one ``wait_for_event`` node run: what it listens for, until when, and
    (written once, by a compare-and-set on ``outcome``) what resumed it.

    ``payload`` is stored before the run is woken, so a process that dies between the two
    loses nothing: the run is due and the recovery pass sends it again."""

    class Outcome(models.TextChoices):
        RESUMED = "resumed"
        TIMED_OUT = "timed_out"

    class Source(models.TextChoices):
        API = "api"
        URL = "url"
        EVENT = "event"
        ADMIN = "admin"

    node_run = models.OneToOneField(
        "executions.NodeRun", on_delete=models.CASCADE, related_name="event_wait"
    )
    execution = models.ForeignKey(
        "executions.Execution", on_delete=models.CASCADE, related_name="event_waits"
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="event_waits"
    )
    node = models.CharField(max_length=64)
    name = models.CharField(max_length=200)
    # None: any key of that event name resumes it (the node has no `match`).
    key = models.CharField(max_length=255, null=True, blank=True)
    schema = models.JSONField(null=True, blank=True)
    until = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, null=True, blank=True)
    payload = models.JSONField(null=True, blank=True)
    source = models.CharField(max_length=16, choices=Source.choices, null=True, blank=True)
    event = models.ForeignKey(
        Event, null=True, blank=True, on_delete=models.SET_NULL, related_name="resumed_waits"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # An event looks for the open waits of its owner and name (events/services.py).
            models.Index(
                fields=["owner", "name", "key"],
                condition=Q(outcome__isnull=True),
                name="event_wait_open",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.node} waits for {self.name} [{self.key}]"


class EventTrigger(models.Model):
    """One event name that starts a workflow (the workflow's ``events`` setting, indexed)."""

    workflow = models.ForeignKey(
        "executions.Workflow", on_delete=models.CASCADE, related_name="event_triggers"
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="event_triggers"
    )
    name = models.CharField(max_length=200)
    # A JMESPath expression over the event ({"name", "key", "data", "id"}); truthy starts it.
    filter = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["owner", "name"], name="event_trigger_lookup")]

    def __str__(self) -> str:
        return f"{self.name} -> {self.workflow_id}"


class EventWebhook(models.Model):
    """A user's event webhook: POST /api/events/hooks/{id}/ with its own secret token.

    Only a SHA-256 of the token is stored; the token is shown once, when rotated."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="event_webhook"
    )
    token_hash = models.CharField(max_length=64)
    rotated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"event webhook of {self.owner_id}"

    @staticmethod
    def new_token() -> str:
        return secrets.token_urlsafe(32)

    @staticmethod
    def hash_token(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()
