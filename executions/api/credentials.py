"""/api/credentials/: create, list, retrieve, replace and delete credentials.

The secret (``data``) is write-only: no response, list or error ever carries it.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.response import Response

from executions.credentials import services
from executions.credentials.models import Credential


class EncryptionUnavailable(APIException):
    """No encryption key is configured: the server's problem, not the request's."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "encryption_unavailable"


class CredentialInputSerializer(serializers.Serializer):
    name = serializers.RegexField(
        services.NAME_RE, max_length=64, error_messages={"invalid": services.NAME_RULE}
    )
    kind = serializers.ChoiceField(choices=Credential.Kind.choices)
    data = serializers.JSONField(
        write_only=True,
        help_text="The secret, by kind: bearer {token}; basic {username, password}; header "
        "{header_name, value}; generic {<field>: <string>, ...}. Never returned.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        clean, errors = services.credential_data_errors(kind=attrs["kind"], data=attrs["data"])
        if errors:
            # Problems with the whole object stay a list; per-field ones are keyed by field.
            raise ValidationError({"data": errors["data"] if "data" in errors else errors})
        attrs["data"] = clean
        return attrs


class WorkflowRefSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()


class CredentialOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    kind = serializers.CharField()
    owner = serializers.IntegerField(source="owner_id")
    used_by = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    @extend_schema_field(WorkflowRefSerializer(many=True))
    def get_used_by(self, obj: Credential) -> list[dict[str, str]]:
        usage = self.context.get("usage")
        if usage is None:
            return services.credential_used_by(credential=obj)
        return usage.get((obj.owner_id, obj.name), [])


IN_USE = inline_serializer(
    "CredentialInUse",
    fields={"detail": serializers.CharField(), "workflows": WorkflowRefSerializer(many=True)},
)


class CredentialViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = CredentialOutputSerializer
    http_method_names = ["get", "post", "put", "delete", "head", "options"]

    def get_queryset(self):
        # As for workflows: each user sees their own; a superuser sees all (never the secrets).
        qs = Credential.objects.all()
        if not self.request.user.is_superuser:
            qs = qs.filter(owner=self.request.user)
        return qs.order_by("name", "id")

    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.get_queryset())
        usage = services.credential_usage(owner_ids={c.owner_id for c in page})
        data = CredentialOutputSerializer(page, many=True, context={"usage": usage}).data
        return self.get_paginated_response(data)

    @extend_schema(request=CredentialInputSerializer, responses={201: CredentialOutputSerializer})
    def create(self, request):
        data = _validated(request.data)
        _check_name_free(request.user, data["name"])
        try:
            credential = services.credential_create(
                owner=request.user, name=data["name"], kind=data["kind"], data=data["data"]
            )
        except services.CredentialNameTaken as exc:
            raise ValidationError({"name": [str(exc)]}) from None
        except ImproperlyConfigured as exc:
            raise EncryptionUnavailable(str(exc)) from None
        return Response(CredentialOutputSerializer(credential).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=CredentialInputSerializer,
        responses={200: CredentialOutputSerializer, 409: IN_USE},
    )
    def update(self, request, pk=None):
        credential = self.get_object()
        data = _validated(request.data)
        if data["name"] != credential.name:
            _check_name_free(credential.owner, data["name"])
        try:
            credential = services.credential_replace(
                credential=credential, name=data["name"], kind=data["kind"], data=data["data"]
            )
        except services.CredentialNameTaken as exc:
            raise ValidationError({"name": [str(exc)]}) from None
        except ImproperlyConfigured as exc:
            raise EncryptionUnavailable(str(exc)) from None
        except services.CredentialInUse as exc:
            return _in_use(exc, "renamed")
        return Response(CredentialOutputSerializer(credential).data)

    @extend_schema(responses={204: None, 409: IN_USE})
    def destroy(self, request, pk=None):
        credential = self.get_object()
        try:
            services.credential_delete(credential=credential)
        except services.CredentialInUse as exc:
            return _in_use(exc, "deleted")
        return Response(status=status.HTTP_204_NO_CONTENT)


def _validated(data) -> dict[str, Any]:
    if not hasattr(data, "get"):
        raise ValidationError({"non_field_errors": ["expected a JSON object"]})
    serializer = CredentialInputSerializer(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _check_name_free(owner, name: str) -> None:
    if Credential.objects.filter(owner=owner, name=name).exists():
        raise ValidationError({"name": [f"a credential named {name!r} already exists"]})


def _in_use(exc: services.CredentialInUse, verb: str) -> Response:
    return Response(
        {
            "detail": f"{exc}; it cannot be {verb} while they refer to it",
            "workflows": exc.workflows,
        },
        status=status.HTTP_409_CONFLICT,
    )
