"""REST API views: parse the request, call one service, serialize the result."""

from __future__ import annotations

from django.db.models import Prefetch
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from executions import selectors
from executions.api import serializers as s
from executions.api.headers import idempotency_key
from executions.engine.start import ConcurrencyKeyError
from executions.events.models import EventWait
from executions.events.resume import execution_resume
from executions.events.waits import PayloadInvalid
from executions.history import execution_events
from executions.models import Execution, NodeRun, Workflow
from executions.nodes import node_types
from executions.services import workflows as workflow_services
from executions.services.executions import (
    execution_cancel,
    execution_retry,
)
from executions.services.pause import execution_pause, execution_unpause
from executions.states import ExecutionStatus, Trigger
from executions.triggers.debounce import DebounceKeyError, trigger_execution
from executions.triggers.schedules import BackfillTooLarge, schedule_backfill
from executions.triggers.webhooks import webhook_token_rotate

IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="At most 255 characters. The same key for the same workflow returns the same execution.",
)


def execution_document(execution) -> dict:
    """The execution with its node runs: as just written when the trigger created it (the
    engine keeps the rows it inserted), else read."""
    if "node_runs" not in getattr(execution, "_prefetched_objects_cache", {}):
        execution = (
            type(execution)
            .objects.prefetch_related(
                Prefetch("node_runs", queryset=NodeRun.objects.order_by("id"))
            )
            .get(pk=execution.pk)
        )
    return s.ExecutionOutputSerializer(execution).data


class WorkflowViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = s.WorkflowOutputSerializer
    http_method_names = ["get", "post", "put", "delete", "head", "options"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user, typed id
            return Workflow.objects.none()
        return selectors.workflow_list(user=self.request.user)

    @extend_schema(request=s.WorkflowInputSerializer, responses={201: s.WorkflowOutputSerializer})
    def create(self, request):
        data = _validated(s.WorkflowInputSerializer, request.data, owner=request.user)
        workflow = workflow_services.workflow_create(owner=request.user, data=data)
        return Response(
            s.WorkflowOutputSerializer(workflow, context={"request": request}).data,
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(request=s.WorkflowInputSerializer, responses={200: s.WorkflowOutputSerializer})
    def update(self, request, pk=None):
        workflow = self.get_object()
        data = _validated(s.WorkflowInputSerializer, request.data, owner=workflow.owner)
        workflow = workflow_services.workflow_replace(workflow=workflow, data=data)
        return Response(s.WorkflowOutputSerializer(workflow, context={"request": request}).data)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "cancel_active",
                bool,
                description="Cancel the workflow's pending and running executions and delete it "
                "(without it, a workflow with active executions answers 409).",
            )
        ],
        responses={204: None, 409: s.WorkflowInUseOutputSerializer},
    )
    def destroy(self, request, pk=None):
        workflow = self.get_object()
        params = _validated(WorkflowDeleteSerializer, request.query_params)
        try:
            workflow_services.workflow_delete(
                workflow=workflow, cancel_active=params["cancel_active"]
            )
        except workflow_services.WorkflowHasActiveExecutions as exc:
            return Response(
                {"detail": str(exc), "active_executions": exc.executions, "count": exc.total},
                status=status.HTTP_409_CONFLICT,
            )
        return Response(status=status.HTTP_204_NO_CONTENT)

    def get_serializer_class(self):
        # The browsable API builds each action's form from this: execute takes an input only.
        return {
            "execute": s.ExecuteInputSerializer,
            "webhook_token": serializers.Serializer,
        }.get(self.action, s.WorkflowOutputSerializer)

    @extend_schema(
        request=s.ExecuteInputSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={202: s.ExecutionOutputSerializer, 200: s.ExecutionOutputSerializer},
        examples=[
            OpenApiExample(
                "Start an execution",
                value={"input": {"order_id": 42, "customer": "ada@example.com"}},
                request_only=True,
            )
        ],
    )
    @action(detail=True, methods=["post"])
    def execute(self, request, pk=None):
        workflow = self.get_object()
        key = idempotency_key(request)
        data = _validated(s.ExecuteInputSerializer, request.data if request.data else {})
        try:
            triggered = trigger_execution(
                workflow=workflow,
                input=data.get("input") or {},
                trigger=Trigger.API,
                idempotency_key=key,
                priority=data.get("priority"),
            )
        except DebounceKeyError as exc:
            raise ValidationError({"input": [f"debounce key: {exc}"]}) from None
        except ConcurrencyKeyError as exc:
            raise ValidationError({"input": [f"concurrency key: {exc}"]}) from None
        return Response(
            execution_document(triggered.execution),
            status=status.HTTP_202_ACCEPTED if triggered.accepted else status.HTTP_200_OK,
        )

    @extend_schema(
        request=s.BackfillInputSerializer,
        responses={202: s.BackfillOutputSerializer, 200: s.BackfillOutputSerializer},
    )
    @action(detail=True, methods=["post"])
    def backfill(self, request, pk=None):
        """One run per cron slot in [start, end), at most MAX_SLOTS; idempotent per slot."""
        workflow = self.get_object()
        data = _validated(s.BackfillInputSerializer, request.data if request.data else {})
        try:
            runs = schedule_backfill(workflow=workflow, start=data["start"], end=data["end"])
        except BackfillTooLarge as exc:
            raise ValidationError({"end": [str(exc)]}) from None
        body = s.BackfillOutputSerializer(
            {"count": len(runs), "ids": [r.execution.id for r in runs], "executions": runs}
        ).data
        created = any(r.created for r in runs)
        return Response(body, status=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK)

    @extend_schema(request=None, responses={200: s.WebhookTokenOutputSerializer})
    @action(detail=True, methods=["post"], url_path="webhook-token")
    def webhook_token(self, request, pk=None):
        """A new webhook token (the old one stops working); the only place a token is shown."""
        workflow = self.get_object()
        token = webhook_token_rotate(workflow=workflow)
        url = request.build_absolute_uri(reverse("webhook", kwargs={"workflow_id": workflow.pk}))
        return Response({"webhook_token": token, "webhook_url": url})


class WorkflowDeleteSerializer(serializers.Serializer):
    cancel_active = serializers.BooleanField(default=False)


class ExecutionFilterSerializer(serializers.Serializer):
    workflow = serializers.UUIDField(required=False)
    status = serializers.ChoiceField(choices=ExecutionStatus.choices, required=False)
    parent_execution = serializers.UUIDField(required=False)
    parent_node_run = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)


class ExecutionViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = s.ExecutionOutputSerializer

    def get_serializer_class(self):
        # The browsable API's forms for the actions: retry takes a mode, cancel nothing.
        return {
            "retry": s.RetryRequestSerializer,
            "cancel": serializers.Serializer,
            "pause": serializers.Serializer,
            "unpause": serializers.Serializer,
            "list": s.ExecutionSummaryOutputSerializer,
        }.get(self.action, s.ExecutionOutputSerializer)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user, typed id
            return Execution.objects.none()
        if self.action != "list":
            return selectors.execution_list(user=self.request.user)
        qs = selectors.execution_summary_list(user=self.request.user)
        filters = _validated(ExecutionFilterSerializer, self.request.query_params)
        if "workflow" in filters:
            qs = qs.filter(workflow_id=filters["workflow"])
        if "status" in filters:
            qs = qs.filter(status=filters["status"])
        if "parent_execution" in filters:  # the children its nodes started
            qs = qs.filter(parent_node_run__execution_id=filters["parent_execution"])
        if "parent_node_run" in filters:
            qs = qs.filter(parent_node_run_id=filters["parent_node_run"])
        return qs

    @extend_schema(
        parameters=[
            OpenApiParameter("workflow", str, description="workflow id"),
            OpenApiParameter("status", str, enum=ExecutionStatus.values),
            OpenApiParameter(
                "parent_execution", str, description="children started by this execution's nodes"
            ),
            OpenApiParameter(
                "parent_node_run", int, description="children started by this node run"
            ),
        ],
        responses={200: s.ExecutionSummaryOutputSerializer(many=True)},
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=None, responses={200: s.ExecutionOutputSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        execution = self.get_object()
        execution = execution_cancel(execution=execution)
        return Response(execution_document(execution))

    @extend_schema(request=None, responses={200: s.ExecutionOutputSerializer})
    @action(detail=True, methods=["post"])
    def pause(self, request, pk=None):
        """Start no new node runs; running ones finish. 409 unless pending or running."""
        execution = execution_pause(execution=self.get_object(), actor=str(request.user))
        return Response(execution_document(execution))

    @extend_schema(request=None, responses={200: s.ExecutionOutputSerializer})
    @action(detail=True, methods=["post"])
    def unpause(self, request, pk=None):
        """Continue a paused execution where it stopped. 409 unless paused."""
        execution = execution_unpause(execution=self.get_object(), actor=str(request.user))
        return Response(execution_document(execution))

    @extend_schema(request=None, responses={200: s.ExecutionEventSerializer(many=True)})
    @action(detail=True, methods=["get"])
    def events(self, request, pk=None):
        """The execution's history, oldest first: every node run's queue, attempts, retry
        waits and end, and what was done to the execution (pause, unpause)."""
        execution = self.get_object()
        runs = execution.node_runs.order_by("id")
        recorded = execution.events.all()
        return Response(
            s.ExecutionEventSerializer(execution_events(execution, runs, recorded), many=True).data
        )

    @extend_schema(request=s.RetryRequestSerializer, responses={202: s.ExecutionOutputSerializer})
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        execution = self.get_object()
        data = _validated(s.RetryRequestSerializer, request.data if request.data else {})
        new = execution_retry(execution=execution, mode=data["mode"], version=data["version"])
        return Response(execution_document(new), status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=s.ResumeInputSerializer,
        responses={200: s.ExecutionOutputSerializer},
        description="Resume a waiting wait_for_event node with `data` as its output: 409 when "
        "that node is not waiting (not started, already resumed, timed out, or the execution "
        "stopped), 400 when `data` does not fit the node's schema.",
    )
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        execution = self.get_object()
        data = _validated(s.ResumeInputSerializer, request.data if request.data else {})
        try:
            execution_resume(
                execution=execution,
                node=data.get("node"),
                data=data["data"],
                source=EventWait.Source.API,
            )
        except PayloadInvalid as exc:
            raise ValidationError({"data": exc.errors}) from None
        return Response(execution_document(execution))


class NodeTypeListView(APIView):
    @extend_schema(responses={200: s.NodeTypeOutputSerializer(many=True)})
    def get(self, request):
        data = [
            {"type": name, "description": t.description, "config_schema": t.config_schema}
            for name, t in node_types().items()
        ]
        return Response(s.NodeTypeOutputSerializer(data, many=True).data)


def _validated(serializer_class, data, **context) -> dict:
    if not hasattr(data, "get"):
        raise ValidationError({"non_field_errors": ["expected a JSON object"]})
    serializer = serializer_class(data=data, context=context)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


__all__ = ["WorkflowViewSet", "ExecutionViewSet", "NodeTypeListView", "get_object_or_404"]
