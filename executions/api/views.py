"""REST API views: parse the request, call one service, serialize the result."""

from __future__ import annotations

from django.db.models import Prefetch
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from executions import selectors
from executions.api import serializers as s
from executions.models import Execution, NodeRun, Workflow
from executions.nodes import node_types
from executions.services import workflows as workflow_services
from executions.services.executions import (
    execution_cancel,
    execution_create,
    execution_retry,
)
from executions.states import ExecutionStatus, Trigger
from executions.triggers.webhooks import webhook_token_rotate

IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="At most 255 characters. The same key for the same workflow returns the same execution.",
)


def execution_document(execution) -> dict:
    execution = (
        type(execution)
        .objects.prefetch_related(Prefetch("node_runs", queryset=NodeRun.objects.order_by("id")))
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

    def perform_destroy(self, instance):
        workflow_services.workflow_delete(workflow=instance)

    @extend_schema(
        request=s.ExecuteInputSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={202: s.ExecutionOutputSerializer, 200: s.ExecutionOutputSerializer},
    )
    @action(detail=True, methods=["post"])
    def execute(self, request, pk=None):
        workflow = self.get_object()
        key = request.headers.get("Idempotency-Key")
        if key is not None and not (1 <= len(key) <= 255):
            raise ValidationError({"Idempotency-Key": ["must be 1-255 characters"]})
        data = _validated(s.ExecuteInputSerializer, request.data if request.data else {})
        execution, created = execution_create(
            workflow=workflow,
            input=data.get("input") or {},
            trigger=Trigger.API,
            idempotency_key=key,
            priority=data.get("priority"),
        )
        return Response(
            execution_document(execution),
            status=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK,
        )

    @extend_schema(request=None, responses={200: s.WebhookTokenOutputSerializer})
    @action(detail=True, methods=["post"], url_path="webhook-token")
    def webhook_token(self, request, pk=None):
        """A new webhook token (the old one stops working); the only place a token is shown."""
        workflow = self.get_object()
        token = webhook_token_rotate(workflow=workflow)
        url = request.build_absolute_uri(reverse("webhook", kwargs={"workflow_id": workflow.pk}))
        return Response({"webhook_token": token, "webhook_url": url})


class ExecutionFilterSerializer(serializers.Serializer):
    workflow = serializers.UUIDField(required=False)
    status = serializers.ChoiceField(choices=ExecutionStatus.choices, required=False)


class ExecutionViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = s.ExecutionOutputSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user, typed id
            return Execution.objects.none()
        qs = selectors.execution_list(user=self.request.user)
        if self.action == "list":
            filters = _validated(ExecutionFilterSerializer, self.request.query_params)
            if "workflow" in filters:
                qs = qs.filter(workflow_id=filters["workflow"])
            if "status" in filters:
                qs = qs.filter(status=filters["status"])
        return qs

    @extend_schema(
        parameters=[
            OpenApiParameter("workflow", str, description="workflow id"),
            OpenApiParameter("status", str, enum=ExecutionStatus.values),
        ]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=None, responses={200: s.ExecutionOutputSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        execution = self.get_object()
        execution = execution_cancel(execution=execution)
        return Response(execution_document(execution))

    @extend_schema(request=s.RetryRequestSerializer, responses={202: s.ExecutionOutputSerializer})
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        execution = self.get_object()
        data = _validated(s.RetryRequestSerializer, request.data if request.data else {})
        new = execution_retry(execution=execution, mode=data["mode"])
        return Response(execution_document(new), status=status.HTTP_202_ACCEPTED)


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
