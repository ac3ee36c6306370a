from __future__ import annotations

from django.conf import settings
from django.urls import reverse
from rest_framework import serializers

from executions.credentials.services import credential_reference_errors
from executions.engine.retry import DEFAULT_RETRY
from executions.graph import CONNECTION_TYPES
from executions.models import Execution, NodeRun
from executions.nodes.templating import TemplateProblem, compile_template, is_template
from executions.services.rate_limits import NAME_RE, NAME_RULE, rate_limit_reference_errors
from executions.states import NodeRunStatus, Priority
from executions.triggers.schedules import check_timezone, cron_fields
from executions.validation import validate_graph


class RetryInputSerializer(serializers.Serializer):
    max_retries = serializers.IntegerField(
        min_value=0, max_value=10, default=DEFAULT_RETRY["max_retries"]
    )
    backoff_seconds = serializers.FloatField(
        min_value=0, max_value=3600, default=DEFAULT_RETRY["backoff_seconds"]
    )
    max_backoff_seconds = serializers.FloatField(
        min_value=0, max_value=86400, default=DEFAULT_RETRY["max_backoff_seconds"]
    )
    jitter = serializers.BooleanField(default=DEFAULT_RETRY["jitter"])


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


class WorkflowInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(allow_blank=True, default="", max_length=10000)
    is_active = serializers.BooleanField(default=True)
    timeout_seconds = serializers.IntegerField(min_value=1, max_value=86400, default=3600)
    webhook_enabled = serializers.BooleanField(default=False)
    schedule = ScheduleInputSerializer(required=False, allow_null=True, default=None)
    priority = serializers.ChoiceField(choices=Priority.choices, default=Priority.NORMAL)
    nodes = NodeInputSerializer(many=True, allow_empty=True, max_length=1000)
    connections = ConnectionInputSerializer(many=True, default=list, max_length=5000)

    def validate(self, attrs):
        errors = validate_graph(attrs["nodes"], attrs.get("connections", []))
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
    retry = RetryInputSerializer()
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
    schedule = serializers.JSONField(allow_null=True)
    priority = serializers.CharField()
    nodes = serializers.SerializerMethodField()
    connections = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def _graph(self, obj) -> dict:
        graph = getattr(obj, "graph", None)
        if graph is None:
            graph = obj.versions.get(version=obj.version).graph
            obj.graph = graph
        return graph

    def get_webhook_url(self, obj) -> str | None:
        # The URL only: the token is shown once, by the rotate endpoint.
        if not obj.webhook_enabled:
            return None
        path = reverse("webhook", kwargs={"workflow_id": obj.pk})
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path

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

    class Meta:
        model = Execution
        fields = [
            "id",
            "workflow",
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
            "created_at",
            "started_at",
            "finished_at",
            "deadline_at",
            "node_runs",
        ]


class RetryRequestSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=["from_failed", "from_start"], default="from_failed")


class NodeTypeOutputSerializer(serializers.Serializer):
    type = serializers.CharField()
    description = serializers.CharField()
    config_schema = serializers.DictField()


class WebhookTokenOutputSerializer(serializers.Serializer):
    webhook_token = serializers.CharField()
    webhook_url = serializers.CharField()
