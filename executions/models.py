from __future__ import annotations

import secrets
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from executions.states import (
    BulkStatus,
    ExecutionStatus,
    NodeRunStatus,
    Priority,
    SlotOutcome,
    Trigger,
    WebhookRespond,
)


class Workflow(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="workflows"
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    is_active = models.BooleanField(default=True)
    timeout_seconds = models.PositiveIntegerField(default=3600)
    version = models.PositiveIntegerField(default=1)
    # Triggers: {"cron": "...", "timezone": "..."} or null; the webhook token is a secret.
    schedule = models.JSONField(null=True, blank=True)
    webhook_enabled = models.BooleanField(default=False)
    webhook_token = models.CharField(max_length=128, blank=True, default="")
    # on_completion: the webhook request waits (at most the timeout) and answers with the
    # result, or with the output of webhook_respond_node when set.
    webhook_respond = models.CharField(
        max_length=16, choices=WebhookRespond.choices, default=WebhookRespond.IMMEDIATELY
    )
    webhook_respond_timeout_seconds = models.PositiveSmallIntegerField(default=10)
    webhook_respond_node = models.CharField(max_length=64, null=True, blank=True)
    # {"key": "<template over the input>", "seconds": N, "mode": "trailing" | "leading"} or null.
    debounce = models.JSONField(null=True, blank=True)
    # {"limit": N, "key": "<template>", "strategy": "queue" | "cancel_in_progress" |
    # "cancel_newest"}: how many executions (per key) may run at once.
    concurrency = models.JSONField(null=True, blank=True)
    # Event triggers: names (or {"name", "filter"} objects) of events that start this workflow;
    # EventTrigger rows index them for POST /api/events/.
    events = models.JSONField(default=list, blank=True)
    # The priority of executions that do not ask for one (a trigger body may).
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.NORMAL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"], name="workflow_owner_created")]

    def __str__(self) -> str:
        return f"{self.name} (v{self.version})"

    @staticmethod
    def new_webhook_token() -> str:
        return secrets.token_urlsafe(32)


class Node(models.Model):
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="nodes")
    key = models.CharField(max_length=64)
    type = models.CharField(max_length=64)
    name = models.CharField(max_length=200, blank=True, default="")
    config = models.JSONField(default=dict, blank=True)
    retry = models.JSONField(default=dict, blank=True)
    timeout_seconds = models.PositiveIntegerField(default=300)
    # {"name": <RateLimit of the owner>, "key": <optional template>} or null.
    rate_limit = models.JSONField(null=True, blank=True)
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["workflow", "position"]
        constraints = [models.UniqueConstraint(fields=["workflow", "key"], name="node_key_unique")]

    def __str__(self) -> str:
        return self.key


class Connection(models.Model):
    class Type(models.TextChoices):
        SUCCESS = "success"
        ERROR = "error"

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="connections")
    source = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="outgoing")
    target = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="incoming")
    type = models.CharField(max_length=16, choices=Type.choices, default=Type.SUCCESS)
    branch = models.CharField(max_length=64, null=True, blank=True)
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["workflow", "position"]

    def __str__(self) -> str:
        suffix = f" [{self.branch}]" if self.branch else ""
        return f"{self.source.key} -{self.type}-> {self.target.key}{suffix}"


class WorkflowVersion(models.Model):
    """An immutable snapshot of a workflow's graph and settings, one per version.

    Executions point at the snapshot they started from, so editing a workflow never disturbs
    a running execution, and the engine reads (and caches) the graph by this row's id.
    """

    # Kept when the workflow is deleted (SET_NULL): the executions that ran it point here (with
    # RESTRICT), so their history stays readable. workflow_delete removes the unused ones.
    workflow = models.ForeignKey(
        Workflow, null=True, on_delete=models.SET_NULL, related_name="versions"
    )
    version = models.PositiveIntegerField()
    graph = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workflow", "version"], name="workflow_version_unique")
        ]

    def __str__(self) -> str:
        return f"{self.workflow_id} v{self.version}"


class Execution(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Null once the workflow is deleted: a finished execution keeps its history (the snapshot
    # it ran, the workflow's name and owner as they were).
    workflow = models.ForeignKey(
        Workflow, null=True, on_delete=models.SET_NULL, related_name="executions"
    )
    workflow_name = models.CharField(max_length=200, blank=True, default="")
    # Who may see the execution (the workflow's owner when it started); outlives the workflow.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        on_delete=models.CASCADE,
        related_name="executions",
    )
    snapshot = models.ForeignKey(
        WorkflowVersion, on_delete=models.RESTRICT, related_name="executions"
    )
    workflow_version = models.PositiveIntegerField()
    status = models.CharField(
        max_length=16, choices=ExecutionStatus.choices, default=ExecutionStatus.PENDING
    )
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.API)
    # Orders this execution's node runs on the broker; its messages carry it.
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.NORMAL)
    input = models.JSONField(default=dict, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries"
    )
    # A sub-workflow execution wakes this node run of its parent when it finishes.
    parent_node_run = models.ForeignKey(
        "NodeRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="child_executions"
    )
    depth = models.PositiveSmallIntegerField(default=0)
    # A for_each child: the index of its item in the parent node's list (the child's start is
    # keyed by the parent run and this index, so an item is never started twice).
    item_index = models.PositiveIntegerField(null=True, blank=True)
    # Under a workflow concurrency limit: the rendered key ("" when the limit is per workflow).
    concurrency_key = models.CharField(max_length=255, null=True, blank=True)
    # The cron slot a scheduled or backfilled run stands for (also in its input).
    scheduled_for = models.DateTimeField(null=True, blank=True)
    # Created but not started yet (no node runs): a trailing debounce collecting triggers
    # until not_before, or a scheduled run buffered behind the previous one (buffer_one).
    deferred = models.BooleanField(default=False)
    not_before = models.DateTimeField(null=True, blank=True)
    # Debounce: triggers with this key join this execution while the window is open.
    debounce_key = models.CharField(max_length=255, null=True, blank=True)
    debounce_until = models.DateTimeField(null=True, blank=True)
    debounce_open = models.BooleanField(default=False)
    debounce_triggers = models.PositiveIntegerField(default=0)
    # W3C trace context (traceparent, tracestate) of the execution when tracing is on: every
    # node run's span hangs under it, wherever the run executes (weconnect/tracing.py).
    trace_context = models.JSONField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # Idempotency-Key: the same key for the same workflow is one execution, even for
            # concurrent requests (the second INSERT waits for the first and then fails).
            models.UniqueConstraint(
                fields=["workflow", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="execution_idempotency_unique",
            ),
            # One run per cron slot of a workflow, whether Beat fires it twice, catch-up
            # starts it or a backfill asks for it again.
            models.UniqueConstraint(
                fields=["workflow", "scheduled_for"],
                condition=Q(scheduled_for__isnull=False),
                name="execution_slot_unique",
            ),
            # One open debounce window per (workflow, key): concurrent first triggers race on
            # this INSERT and the loser joins the winner's execution.
            models.UniqueConstraint(
                fields=["workflow", "debounce_key"],
                condition=Q(debounce_open=True),
                name="execution_debounce_open_unique",
            ),
        ]
        indexes = [
            models.Index(fields=["workflow", "-created_at"], name="execution_workflow_created"),
            # Admission to a concurrency limit: who holds a slot, who waits in line.
            models.Index(
                fields=["workflow", "concurrency_key", "status", "created_at"],
                condition=Q(concurrency_key__isnull=False),
                name="execution_concurrency",
            ),
            # The API's list of a user's executions (selectors.execution_summary_list).
            models.Index(fields=["owner", "-created_at"], name="execution_owner_created"),
            models.Index(fields=["status", "-created_at"], name="execution_status_created"),
            # The deadline and stale sweeps scan only active executions.
            models.Index(
                fields=["deadline_at"],
                condition=Q(status__in=["pending", "running"]),
                name="execution_active_deadline",
            ),
            # The recovery pass starts deferred executions that are due (triggers.deferred).
            models.Index(
                fields=["not_before"],
                condition=Q(deferred=True, status="pending"),
                name="execution_deferred_due",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"


class ScheduleSlot(models.Model):
    """The ledger of a schedule's cron slots: what became of each one (started, buffered,
    skipped, missed). Unique per (workflow, slot): a slot is decided once."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="slots")
    slot = models.DateTimeField()
    outcome = models.CharField(max_length=16, choices=SlotOutcome.choices)
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.SCHEDULE)
    execution = models.ForeignKey(
        Execution, null=True, blank=True, on_delete=models.SET_NULL, related_name="slots"
    )
    reason = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-slot"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "slot"], name="schedule_slot_unique")
        ]

    def __str__(self) -> str:
        return f"{self.workflow_id} {self.slot.isoformat()} {self.outcome}"


class NodeRun(models.Model):
    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="node_runs")
    node = models.CharField(max_length=64)
    node_type = models.CharField(max_length=64)
    status = models.CharField(
        max_length=16, choices=NodeRunStatus.choices, default=NodeRunStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    reassignments = models.PositiveIntegerField(default=0)
    input = models.JSONField(null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    branch = models.CharField(max_length=64, null=True, blank=True)
    # Node-type state kept across waits (a delay's wake-up time, a sub-workflow's child id).
    state = models.JSONField(null=True, blank=True)
    task_id = models.CharField(max_length=64, blank=True, default="")
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # When a message for this run was last sent; recovery re-sends one that never arrived.
    dispatched_at = models.DateTimeField(null=True, blank=True)
    # Not before: a retry's backoff or a wait is held here, never as a long Celery ETA.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # A running run whose lease is past was lost with its worker (heartbeats extend it).
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    retry_delays = models.JSONField(default=list, blank=True)
    # The worker running the current (or last) attempt, set by the claim in the same statement.
    worker = models.CharField(max_length=255, blank=True, default="")
    # One record per attempt that failed and was retried (start, end, worker, error, wait),
    # appended by the same UPDATE that schedules the retry: the event log's source for them.
    attempt_log = models.JSONField(default=list, blank=True)
    # Why a queued run is not running yet: {"rate_limit": name, "key": ..., "until": ...}.
    waiting_for = models.JSONField(null=True, blank=True)
    # A join's (several predecessors) count of predecessors not finished yet. The statement
    # that finishes a predecessor counts it down under the join's row lock; the one that
    # brings it to 0 decides the join (run or skip). Null for other nodes.
    predecessors_left = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["execution", "node"], name="node_run_unique")
        ]
        indexes = [
            # Recovery scans: queued/retrying runs that are due, running runs past their lease.
            models.Index(
                fields=["status", "next_attempt_at"],
                condition=Q(status__in=["queued", "retrying"]),
                name="node_run_due",
            ),
            models.Index(
                fields=["lease_expires_at"],
                condition=Q(status="running"),
                name="node_run_lease",
            ),
            # Recovery: joins counted down to 0 whose decision was lost with its process.
            models.Index(
                fields=["execution"],
                condition=Q(status="pending", predecessors_left=0),
                name="node_run_join_ready",
            ),
            # Health's "failed in the last hour" and the metrics view's latest failures.
            models.Index(
                fields=["-finished_at"],
                condition=Q(status="failed"),
                name="node_run_failed_recent",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.node} ({self.status})"

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class ExecutionEvent(models.Model):
    """An append-only record of what was done *to* an execution (paused, unpaused, cancelled,
    retried), written in the same transaction as the act itself. What the engine does on each
    hop is derived from the node-run rows instead (executions.history), so the hot path writes
    nothing here."""

    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField()
    event = models.CharField(max_length=32)
    node = models.CharField(max_length=64, null=True, blank=True)
    actor = models.CharField(max_length=200, blank=True, default="")
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["execution", "at"], name="execution_event_at")]

    def __str__(self) -> str:
        return f"{self.execution_id} {self.event} at {self.at}"


class BulkOperation(models.Model):
    """An asynchronous retry or cancel of every execution matching a filter.

    The set is fixed when the job is created (executions created before it, matching the
    filter), so a retry job never retries the executions it starts itself. ``matched``,
    ``done`` and ``failed`` are updated as it goes; ``errors`` keeps the first refusals."""

    class Action(models.TextChoices):
        RETRY = "retry"
        CANCEL = "cancel"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="bulk_operations"
    )
    action = models.CharField(max_length=16, choices=Action.choices)
    filter = models.JSONField(default=dict, blank=True)
    mode = models.CharField(max_length=16, default="from_failed")
    status = models.CharField(max_length=16, choices=BulkStatus.choices, default=BulkStatus.PENDING)
    matched = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # Idempotency-Key: the same key from the same user is one job, even when two
            # requests race (the second INSERT fails and answers with the first job).
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="bulk_operation_idempotency_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.id} ({self.status})"


class RateLimit(models.Model):
    """A named rate shared by every worker: at most ``limit`` node runs start in any window of
    ``period_seconds`` (per key). Nodes name it: {"rate_limit": {"name": ..., "key": ...}}."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="rate_limits"
    )
    name = models.CharField(max_length=64)
    limit = models.PositiveIntegerField()
    period_seconds = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="rate_limit_owner_name_unique")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.limit} per {self.period_seconds}s)"


from executions.credentials.models import Credential  # noqa: E402,F401  (owned by executions)
from executions.events.models import (  # noqa: E402,F401  (owned by executions)
    Event,
    EventTrigger,
    EventWait,
    EventWebhook,
)
