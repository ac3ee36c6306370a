"""The webhook endpoint: POST /api/hooks/{workflow_id}/ with the header X-WeConnect-Token.

No user authentication: the token is the credential. Bodies over the request limit are
answered 413 by the middleware before this view reads anything."""

from __future__ import annotations

from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from executions import jsonsafe
from executions.api.parsers import body_problem
from executions.triggers.webhooks import WebhookNotFound, webhook_trigger

TOKEN_HEADER = "X-WeConnect-Token"

_accepted = inline_serializer(
    "WebhookAccepted",
    {
        "id": serializers.UUIDField(help_text="The execution's id (also as execution_id)."),
        "execution_id": serializers.UUIDField(),
        "workflow_id": serializers.UUIDField(),
        "status": serializers.CharField(),
        "created": serializers.BooleanField(),
    },
)


class WebhookView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    # The body is parsed here, whatever its Content-Type, so that every bad body is a 400.
    parser_classes: list = []

    @extend_schema(
        operation_id="webhook_trigger",
        request={"application/json": {"type": "object", "additionalProperties": True}},
        parameters=[
            OpenApiParameter(
                TOKEN_HEADER,
                str,
                OpenApiParameter.HEADER,
                required=True,
                description="The workflow's webhook token.",
            ),
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                required=False,
                description="At most 255 characters. The same key returns the same execution.",
            ),
        ],
        responses={
            202: _accepted,
            200: _accepted,
            400: OpenApiResponse(description="The body is not a JSON object."),
            404: OpenApiResponse(
                description="Unknown workflow, webhooks disabled, or a wrong token."
            ),
            409: OpenApiResponse(description="The workflow is inactive."),
            413: OpenApiResponse(description="The body is too large."),
        },
    )
    def post(self, request, workflow_id: str):
        key = request.headers.get("Idempotency-Key")
        if key is not None and not (1 <= len(key) <= 255):
            raise ValidationError({"Idempotency-Key": ["must be 1-255 characters"]})
        body = request.body
        if not body.strip():
            payload = {}
        else:
            try:
                payload = jsonsafe.loads(body)
            except jsonsafe.Unstorable as exc:
                raise ValidationError({"body": [body_problem(exc)]}) from None
            if not isinstance(payload, dict):
                raise ValidationError(
                    {"body": [f"must be a JSON object, not {type(payload).__name__}"]}
                )
        try:
            execution, created = webhook_trigger(
                workflow_id=workflow_id,
                token=request.headers.get(TOKEN_HEADER),
                input=payload,
                idempotency_key=key,
            )
        except WebhookNotFound:
            raise NotFound() from None
        return Response(
            {
                "id": str(execution.id),
                "execution_id": str(execution.id),
                "workflow_id": str(execution.workflow_id),
                "status": execution.status,
                "created": created,
            },
            status=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK,
        )
