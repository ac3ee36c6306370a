"""/api/rate-limits/: named rate limits shared by every worker (list, create, retrieve,
replace, delete). Each user sees and edits their own; a superuser sees all."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from executions.api.credentials import WorkflowRefSerializer
from executions.models import RateLimit
from executions.services import rate_limits as services


class RateLimitInputSerializer(serializers.Serializer):
    name = serializers.RegexField(
        services.NAME_RE, max_length=64, error_messages={"invalid": services.NAME_RULE}
    )
    limit = serializers.IntegerField(min_value=1, max_value=services.MAX_LIMIT)
    period_seconds = serializers.IntegerField(min_value=1, max_value=services.MAX_PERIOD_SECONDS)


class RateLimitOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    limit = serializers.IntegerField()
    period_seconds = serializers.IntegerField()
    owner = serializers.IntegerField(source="owner_id")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


IN_USE = inline_serializer(
    "RateLimitInUse",
    fields={"detail": serializers.CharField(), "workflows": WorkflowRefSerializer(many=True)},
)


class RateLimitViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = RateLimitOutputSerializer
    http_method_names = ["get", "post", "put", "delete", "head", "options"]

    def get_queryset(self):
        qs = RateLimit.objects.all()
        if not self.request.user.is_superuser:
            qs = qs.filter(owner=self.request.user)
        return qs.order_by("name", "id")

    @extend_schema(request=RateLimitInputSerializer, responses={201: RateLimitOutputSerializer})
    def create(self, request):
        data = _validated(request.data)
        try:
            rate_limit = services.rate_limit_create(owner=request.user, **data)
        except services.RateLimitNameTaken as exc:
            raise ValidationError({"name": [str(exc)]}) from None
        return Response(RateLimitOutputSerializer(rate_limit).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=RateLimitInputSerializer,
        responses={200: RateLimitOutputSerializer, 409: IN_USE},
    )
    def update(self, request, pk=None):
        rate_limit = self.get_object()
        data = _validated(request.data)
        try:
            rate_limit = services.rate_limit_replace(rate_limit=rate_limit, **data)
        except services.RateLimitNameTaken as exc:
            raise ValidationError({"name": [str(exc)]}) from None
        except services.RateLimitInUse as exc:
            return _in_use(exc, "renamed")
        return Response(RateLimitOutputSerializer(rate_limit).data)

    @extend_schema(responses={204: None, 409: IN_USE})
    def destroy(self, request, pk=None):
        rate_limit = self.get_object()
        try:
            services.rate_limit_delete(rate_limit=rate_limit)
        except services.RateLimitInUse as exc:
            return _in_use(exc, "deleted")
        return Response(status=status.HTTP_204_NO_CONTENT)


def _validated(data) -> dict[str, Any]:
    if not hasattr(data, "get"):
        raise ValidationError({"non_field_errors": ["expected a JSON object"]})
    serializer = RateLimitInputSerializer(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _in_use(exc: services.RateLimitInUse, verb: str) -> Response:
    return Response(
        {
            "detail": f"{exc}; it cannot be {verb} while they refer to it",
            "workflows": exc.workflows,
        },
        status=status.HTTP_409_CONFLICT,
    )
