"""Bulk operations: POST /api/executions/bulk/ starts one, GET /api/executions/bulk/{id}/
shows its progress."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from executions.api.headers import idempotency_key
from executions.api.views import IDEMPOTENCY_HEADER, _validated
from executions.models import BulkOperation
from executions.services.bulk import bulk_operation_start
from executions.states import ExecutionStatus


class BulkFilterSerializer(serializers.Serializer):
    workflow = serializers.UUIDField(required=False)
    status = serializers.ChoiceField(choices=ExecutionStatus.choices, required=False)
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)
    ids = serializers.ListField(
        child=serializers.UUIDField(), required=False, max_length=100_000, allow_empty=False
    )

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise ValidationError(
                    {k: [f"unknown filter field (use {', '.join(self.fields)})"] for k in unknown}
                )
        return super().to_internal_value(data)

    def validate(self, attrs):
        after, before = attrs.get("created_after"), attrs.get("created_before")
        if after and before and after >= before:
            raise ValidationError({"created_before": ["must be later than created_after"]})
        return attrs


class BulkInputSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=BulkOperation.Action.choices)
    filter = BulkFilterSerializer()
    mode = serializers.ChoiceField(
        choices=["from_failed", "from_start"],
        default="from_failed",
        help_text="For retry: from the failed nodes (default) or from the start.",
    )


class BulkOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = BulkOperation
        fields = [
            "id",
            "action",
            "mode",
            "filter",
            "status",
            "matched",
            "done",
            "failed",
            "errors",
            "idempotency_key",
            "created_at",
            "started_at",
            "finished_at",
        ]


class BulkOperationCreateView(APIView):
    @extend_schema(
        request=BulkInputSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={202: BulkOutputSerializer, 200: BulkOutputSerializer},
        examples=[
            OpenApiExample(
                "Retry the failed executions of a workflow",
                value={
                    "action": "retry",
                    "filter": {
                        "workflow": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
                        "status": "failed",
                        "created_after": "2026-12-01T00:00:00Z",
                    },
                },
                request_only=True,
            )
        ],
    )
    def post(self, request):
        """Retry or cancel every execution matching the filter, as a background job."""
        key = idempotency_key(request)
        data = _validated(BulkInputSerializer, request.data)
        operation, created = bulk_operation_start(
            owner=request.user,
            action=data["action"],
            filter=data["filter"],
            mode=data["mode"],
            idempotency_key=key,
        )
        return Response(
            BulkOutputSerializer(operation).data,
            status=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK,
        )


class BulkOperationDetailView(APIView):
    @extend_schema(responses={200: BulkOutputSerializer})
    def get(self, request, bulk_id):
        """A bulk job's progress: matched, done, failed (and why, for the first refusals)."""
        qs = BulkOperation.objects.all()
        if not request.user.is_superuser:
            qs = qs.filter(owner=request.user)
        operation = get_object_or_404(qs, pk=bulk_id)
        return Response(BulkOutputSerializer(operation).data)
