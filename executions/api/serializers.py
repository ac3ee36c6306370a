from __future__ import annotations

import json

from django.conf import settings
from django.urls import reverse
from rest_framework import serializers

from executions.credentials.services import credential_reference_errors
from executions.engine.retry import DEFAULT_RETRY
from executions.events.triggers import events_setting_errors
from executions.graph import CONNECTION_TYPES
from executions.models import Execution, NodeRun
from executions.nodes.templating import TemplateProblem, compile_template, is_template
from executions.selectors import queue_position
from executions.services.rate_limits import NAME_RE, NAME_RULE, rate_limit_reference_errors
from executions.states import NodeRunStatus, Priority, WebhookRespond
from executions.triggers.schedules import (
    CATCH_UP_MODES,
    MAX_CATCH_UP_WINDOW_SECONDS,
    OVERLAP_MODES,
    SCHEDULE_DEFAULTS,
    check_timezone,
    cron_fields,
)
from executions.validation import validate_graph


class RetryInputSerializer(serializers.Serializer):
    """A retry policy; a field left out keeps the value of the level above (node -> workflow
    -> DEFAULT_RETRY), so ``{"max_retries": 0}`` alone turns retries off."""

    max_retries = serializers.IntegerField(
        min_value=0,
        max_value=10,
        required=False,
        help_text=f"default {DEFAULT_RETRY['max_retries']}",
    )
    backoff_seconds = serializers.FloatField(
        min_value=0,
        max_value=3600,
        required=False,
        help_text=f"default {DEFAULT_RETRY['backoff_seconds']}",
    )
    max_backoff_seconds = serializers.FloatField(
        min_value=0,
        max_value=86400,
        required=False,
        help_text=f"default {DEFAULT_RETRY['max_backoff_seconds']}",
    )
    jitter = serializers.BooleanField(
        required=False, help_text=f"default {str(DEFAULT_RETRY['jitter']).lower()}"
    )


class RetryOutputSerializer(serializers.Serializer):
    max_retries = serializers.IntegerField()
    backoff_seconds = serializers.FloatField()
    max_backoff_seconds = serializers.FloatField()
    jitter = serializers.BooleanField()


class RateLimitRefSerializer(serializers.Serializer):
    name = serializers.RegexField(NAME_RE, max_length=64, error_messages={"invalid": NAME_RULE})
    key = serializers.CharField(
        max_length=1000,
        required=False,
        allow_null=True,
        allow_blank=True,
        default=None,
        help_text="A template over the node's input: each value gets its own bucket.",
    )

    def validate_key(self, value: str | None) -> str | None:
        if value and is_template(value):
            try:
                compile_template(value)
            except TemplateProblem as exc:
                raise serializers.ValidationError(str(exc)) from None
        return value or None


class NodeInputSerializer(serializers.Serializer):
    key = serializers.RegexField(
        r"^[A-Za-z0-9_-]{1,64}$",
        max_length=64,
        error_messages={"invalid": "must be 1-64 characters of letters, digits, '_' and '-'"},
    )
    type = serializers.CharField(max_length=64)
    name = serializers.CharField(max_length=200, allow_blank=True, default="")
    config = serializers.DictField(default=dict)
    retry = RetryInputSerializer(required=False)
    timeout_seconds = serializers.IntegerField(min_value=1, default=300)
    rate_limit = RateLimitRefSerializer(required=False, allow_null=True, default=None)

    def validate_timeout_seconds(self, value: int) -> int:
        limit = settings.WECONNECT_MAX_NODE_TIMEOUT
        if value > limit:
            raise serializers.ValidationError(
                f"must be at most {limit} (half the broker visibility timeout)"
            )
        return value


class ConnectionInputSerializer(serializers.Serializer):
    source = serializers.CharField(max_length=64)
    target = serializers.CharField(max_length=64)
    type = serializers.ChoiceField(choices=CONNECTION_TYPES, default="success")
    branch = serializers.CharField(max_length=64, required=False, allow_null=True, default=None)


class ScheduleInputSerializer(serializers.Serializer):
    cron = serializers.CharField(max_length=200)
    timezone = serializers.CharField(max_length=64, default="UTC")
    overlap = serializers.ChoiceField(choices=OVERLAP_MODES, default=SCHEDULE_DEFAULTS["overlap"])
    catch_up = serializers.ChoiceField(
        choices=CATCH_UP_MODES, default=SCHEDULE_DEFAULTS["catch_up"]
    )
    catch_up_window_seconds = serializers.IntegerField(
        min_value=1,
        max_value=MAX_CATCH_UP_WINDOW_SECONDS,
        default=SCHEDULE_DEFAULTS["catch_up_window_seconds"],
    )

    def validate_cron(self, value: str) -> str:
        try:
            cron_fields(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None
        return value.strip()

    def validate_timezone(self, value: str) -> str:
        try:
            return check_timezone(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None


class DebounceInputSerializer(serializers.Serializer):
    key = serializers.CharField(max_length=1000, allow_blank=True)
    seconds = serializers.IntegerField(min_value=1, max_value=86400)
    mode = serializers.ChoiceField(choices=["trailing", "leading"], default="trailing")

    def validate_key(self, value: str) -> str:
        try:
            compile_template(value)
        except TemplateProblem as exc:
            raise serializers.ValidationError(str(exc)) from None
        return value


class ConcurrencyInputSerializer(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=10000)
    key = serializers.CharField(max_length=1000, allow_blank=True, required=False, default="")
    strategy = serializers.ChoiceField(
        choices=["queue", "cancel_in_progress", "cancel_newest"], default="queue"
    )

    def validate_key(self, value: str) -> str:
        try:
            compile_template(value)
        except TemplateProblem as exc:
            raise serializers.ValidationError(str(exc)) from None
        return value


class WorkflowInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(allow_blank=True, default="", max_length=10000)
    is_active = serializers.BooleanField(default=True)
    timeout_seconds = serializers.IntegerField(min_value=1, max_value=86400, default=3600)
    webhook_enabled = serializers.BooleanField(default=False)
    webhook_respond = serializers.ChoiceField(
        choices=WebhookRespond.choices, default=WebhookRespond.IMMEDIATELY
    )
    webhook_respond_timeout_seconds = serializers.IntegerField(
        min_value=1, max_value=30, default=10
    )
    webhook_respond_node = serializers.CharField(
        max_length=64, required=False, allow_null=True, default=None
    )
    debounce = DebounceInputSerializer(required=False, allow_null=True, default=None)
    concurrency = ConcurrencyInputSerializer(
        required=False,
        allow_null=True,
        default=None,
        help_text="At most `limit` executions (per rendered `key`) at once; over it: wait in "
        "line as `queued`, cancel the running one, or refuse the new one.",
    )
    schedule = ScheduleInputSerializer(required=False, allow_null=True, default=None)
    events = serializers.JSONField(
        required=False,
        default=list,
        help_text='Event names that start this workflow (trigger "event"): strings, or '
        '{"name": ..., "filter": <JMESPath over the event>} objects.',
    )
    retry = RetryInputSerializer(required=False)
    priority = serializers.ChoiceField(choices=Priority.choices, default=Priority.NORMAL)
    nodes = NodeInputSerializer(many=True, allow_empty=True, max_length=1000)
    connections = ConnectionInputSerializer(many=True, default=list, max_length=5000)

    def validate_events(self, value):
        errors = events_setting_errors(value)
        if errors:
            raise serializers.ValidationError(errors)
        return value or []

    def validate(self, attrs):
        errors = validate_graph(attrs["nodes"], attrs.get("connections", []))
        respond_node = attrs.get("webhook_respond_node")
        if respond_node is not None and respond_node not in {n["key"] for n in attrs["nodes"]}:
            errors = {
                **errors,
                "webhook_respond_node": [f"{respond_node!r} is not a node of this workflow"],
            }
        # Credentials named by nodes must be the workflow owner's; the views pass the owner
        # (without one, a missing credential fails the node when it runs).
        owner = self.context.get("owner")
        if owner is not None:
            missing = credential_reference_errors(owner=owner, nodes=attrs["nodes"])
            if missing:
                errors = {**errors, "nodes": [*errors.get("nodes", []), *missing]}
            # Each unknown rate limit is reported under the field's own path.
            errors.update(rate_limit_reference_errors(owner=owner, nodes=attrs["nodes"]))
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class NodeOutputSerializer(serializers.Serializer):
    key = serializers.CharField()
    type = serializers.CharField()
    name = serializers.CharField()
    config = serializers.DictField()
    retry = RetryOutputSerializer()
    timeout_seconds = serializers.IntegerField()
    rate_limit = serializers.DictField(required=False, allow_null=True, default=None)

    def to_representation(self, instance):
        data = super().to_representation(instance)
        if data.get("rate_limit") is None:  # shown only when set, as in the stored document
            data.pop("rate_limit", None)
        return data


class ConnectionOutputSerializer(serializers.Serializer):
    source = serializers.CharField()
    target = serializers.CharField()
    type = serializers.CharField()
    branch = serializers.CharField(allow_null=True)


class WorkflowOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    description = serializers.CharField()
    is_active = serializers.BooleanField()
    timeout_seconds = serializers.IntegerField()
    version = serializers.IntegerField()
    owner = serializers.IntegerField(source="owner_id")
    webhook_enabled = serializers.BooleanField()
    webhook_url = serializers.SerializerMethodField()
    webhook_respond = serializers.CharField()
    webhook_respond_timeout_seconds = serializers.IntegerField()
    webhook_respond_node = serializers.CharField(allow_null=True)
    debounce = serializers.JSONField(allow_null=True)
    concurrency = serializers.JSONField(allow_null=True)
    schedule = serializers.JSONField(allow_null=True)
    events = serializers.JSONField()
    retry = serializers.SerializerMethodField()
    priority = serializers.CharField()
    nodes = serializers.SerializerMethodField()
    connections = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def _graph(self, obj) -> dict:
        graph = getattr(obj, "graph", None)
        if graph is None:
            # A workflow written without its snapshot (by hand, or by an old admin) must not
            # break a list for everybody: it reads as a workflow without nodes.
            version = obj.versions.filter(version=obj.version).first()
            graph = version.graph if version is not None else {"nodes": [], "connections": []}
            obj.graph = graph
        return graph

    def get_webhook_url(self, obj) -> str | None:
        # The URL only: the token is shown once, by the rotate endpoint.
        if not obj.webhook_enabled:
            return None
        path = reverse("webhook", kwargs={"workflow_id": obj.pk})
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path

    def get_retry(self, obj) -> dict | None:
        # The workflow's default for its nodes; versions saved before it existed have none
        # (their nodes carry the policy they were saved with).
        return self._graph(obj).get("retry")

    def get_nodes(self, obj) -> list[dict]:
        return NodeOutputSerializer(self._graph(obj)["nodes"], many=True).data

    def get_connections(self, obj) -> list[dict]:
        return ConnectionOutputSerializer(self._graph(obj)["connections"], many=True).data


class ExecuteInputSerializer(serializers.Serializer):
    input = serializers.DictField(required=False, default=dict)
    priority = serializers.ChoiceField(
        choices=Priority.choices,
        required=False,
        allow_null=True,
        default=None,
        help_text="Overrides the workflow's default priority for this execution.",
    )


class NodeRunOutputSerializer(serializers.ModelSerializer):
    waiting_for = serializers.SerializerMethodField(
        help_text="Why a queued run waits: for a rate limit {rate_limit, key, until}; for an "
        "event (wait_for_event) {event, key (null: any), until (when it gives up)}."
    )

    def get_waiting_for(self, obj) -> dict | None:
        if obj.status != "queued":
            return None
        if obj.waiting_for:  # a rate limit, recorded by the run that found no token
            return obj.waiting_for
        state = obj.state if isinstance(obj.state, dict) else None
        if not state or "event" not in state or "until" not in state:
            return None
        return {"event": state["event"], "key": state.get("key"), "until": state["until"]}

    class Meta:
        model = NodeRun
        fields = [
            "node",
            "node_type",
            "status",
            "attempts",
            "reassignments",
            "input",
            "output",
            "error",
            "branch",
            "retry_delays",
            "queued_at",
            "started_at",
            "finished_at",
            "next_attempt_at",
            "state",
            "waiting_for",
        ]

    def to_representation(self, instance):
        data = super().to_representation(instance)
        # Only a run still queued is waiting; the field is stale once it ran or was cancelled.
        if instance.status != NodeRunStatus.QUEUED:
            data["waiting_for"] = None
        return data


class ExecutionOutputSerializer(serializers.ModelSerializer):
    node_runs = NodeRunOutputSerializer(many=True, read_only=True)
    parent_execution = serializers.SerializerMethodField(
        help_text="The execution whose node started this one (sub_workflow, for_each)."
    )

    queue_position = serializers.SerializerMethodField(
        help_text="For a queued execution, its place in line (1 = next to start); else null."
    )

    def get_queue_position(self, obj) -> int | None:
        return queue_position(obj)

    def get_parent_execution(self, obj) -> str | None:
        if obj.parent_node_run_id is None:
            return None
        parent = NodeRun.objects.filter(id=obj.parent_node_run_id).values_list(
            "execution_id", flat=True
        )
        return str(parent[0]) if parent else None

    class Meta:
        model = Execution
        fields = [
            "id",
            "workflow",
            "workflow_name",
            "workflow_version",
            "status",
            "trigger",
            "priority",
            "input",
            "output",
            "error",
            "idempotency_key",
            "retry_of",
            "depth",
            "parent_execution",
            "parent_node_run",
            "item_index",
            "concurrency_key",
            "queue_position",
            "scheduled_for",
            "not_before",
            "debounce_key",
            "debounce_until",
            "debounce_triggers",
            "created_at",
            "started_at",
            "finished_at",
            "deadline_at",
            "node_runs",
        ]


class ActiveExecutionRefSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.CharField()


class WorkflowInUseOutputSerializer(serializers.Serializer):
    """409 to DELETE /api/workflows/{id}/ while executions of the workflow are active."""

    detail = serializers.CharField()
    active_executions = ActiveExecutionRefSerializer(many=True, help_text="At most 100.")
    count = serializers.IntegerField(help_text="How many executions are active.")


class ExecutionSummaryOutputSerializer(serializers.ModelSerializer):
    """An execution in a list: its state without the input, output, error and node run
    documents (GET /api/executions/{id}/ has them)."""

    queue_position = serializers.SerializerMethodField(
        help_text="For a queued execution, its place in line (1 = next to start); else null."
    )

    def get_queue_position(self, obj) -> int | None:
        return queue_position(obj)

    error_message = serializers.CharField(
        allow_null=True,
        read_only=True,
        help_text="The error's message, cut to 500 characters (null when there is none).",
    )

    class Meta:
        model = Execution
        fields = [
            "id",
            "workflow",
            "workflow_name",
            "workflow_version",
            "status",
            "trigger",
            "error_message",
            "idempotency_key",
            "retry_of",
            "depth",
            "parent_node_run",
            "item_index",
            "queue_position",
            "created_at",
            "started_at",
            "finished_at",
            "deadline_at",
        ]


class RetryRequestSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=["from_failed", "from_start"], default="from_failed")
    version = serializers.ChoiceField(
        choices=["original", "latest"],
        default="original",
        help_text="original: the version the execution ran; latest: the workflow's current one.",
    )


class NodeTypeOutputSerializer(serializers.Serializer):
    type = serializers.CharField()
    description = serializers.CharField()
    config_schema = serializers.DictField()


class WebhookTokenOutputSerializer(serializers.Serializer):
    webhook_token = serializers.CharField()
    webhook_url = serializers.CharField()


class BackfillInputSerializer(serializers.Serializer):
    start = serializers.DateTimeField(help_text="ISO time, included.")
    end = serializers.DateTimeField(help_text="ISO time, excluded.")

    def validate(self, attrs):
        if attrs["end"] <= attrs["start"]:
            raise serializers.ValidationError({"end": ["must be after start"]})
        return attrs


class BackfillRunSerializer(serializers.Serializer):
    scheduled_for = serializers.DateTimeField(source="slot")
    id = serializers.UUIDField(source="execution.id")
    status = serializers.CharField(source="execution.status")
    created = serializers.BooleanField()


class BackfillOutputSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    ids = serializers.ListField(child=serializers.UUIDField())
    executions = BackfillRunSerializer(many=True)


class ResumeInputSerializer(serializers.Serializer):
    node = serializers.CharField(
        max_length=64, required=False, help_text="The waiting node (optional when only one waits)."
    )
    data = serializers.DictField(required=False, default=dict)


class EventInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    key = serializers.JSONField(required=False, allow_null=True, default=None)
    data = serializers.JSONField(required=False, default=dict)
    id = serializers.CharField(max_length=255, required=False, allow_null=True, default=None)

    def validate_key(self, value):
        # Keys compare as text: 42 and "42" are the same key.
        if value is None or isinstance(value, str):
            if isinstance(value, str) and len(value) > 255:
                raise serializers.ValidationError("at most 255 characters")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise serializers.ValidationError("must be a string or a number")
        return str(int(value)) if float(value).is_integer() else str(value)

    def validate_data(self, value):
        if "\\u0000" in json.dumps(value):
            raise serializers.ValidationError("must not contain the NUL character (\\u0000)")
        return value


class EventOutputSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The sender's id, or the event's own when none.")
    event = serializers.UUIDField(help_text="The stored event's id.")
    name = serializers.CharField()
    key = serializers.CharField(allow_null=True)
    duplicate = serializers.BooleanField()
    started = serializers.ListField(child=serializers.DictField())
    resumed = serializers.ListField(child=serializers.DictField())
    not_resumed = serializers.ListField(child=serializers.DictField())


class EventWebhookTokenOutputSerializer(serializers.Serializer):
    webhook_token = serializers.CharField()
    webhook_url = serializers.CharField()


class ExecutionEventSerializer(serializers.Serializer):
    at = serializers.CharField(allow_null=True, help_text="ISO time; null for an earlier attempt")
    event = serializers.CharField(
        help_text="created, started, queued, attempt_failed, retry_wait, waiting, succeeded, "
        "failed, skipped, cancelled, timed_out, paused, unpaused"
    )
    node = serializers.CharField(allow_null=True)
    attempt = serializers.IntegerField(required=False)
    seconds = serializers.FloatField(required=False)
    until = serializers.CharField(required=False, allow_null=True)
    error = serializers.JSONField(required=False, allow_null=True)
    task_id = serializers.CharField(required=False)
    actor = serializers.CharField(required=False)
    worker = serializers.CharField(required=False, allow_null=True)
    state = serializers.JSONField(required=False, allow_null=True)
