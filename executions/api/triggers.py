"""The webhook endpoint: POST /api/hooks/{workflow_id}/ with the header X-WeConnect-Token.

No user authentication: the token is the credential. Bodies over the request limit are
answered 413 by the middleware before this view reads anything."""

from __future__ import annotations

from django.http import HttpResponse
from django.urls import reverse
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
from executions.api.headers import idempotency_key
from executions.api.parsers import body_problem
from executions.engine.start import ConcurrencyKeyError
from executions.states import WebhookRespond
from executions.triggers.debounce import DebounceKeyError
from executions.triggers.webhooks import (
    WebhookAnswer,
    WebhookNotFound,
    webhook_answer,
    webhook_execution,
    webhook_result,
    webhook_trigger,
    webhook_workflow,
)

TOKEN_HEADER = "X-WeConnect-Token"

_accepted = inline_serializer(
    "WebhookAccepted",
    {
        "id": serializers.UUIDField(help_text="The execution's id (also as execution_id)."),
        "execution_id": serializers.UUIDField(),
        "workflow_id": serializers.UUIDField(),
        "status": serializers.CharField(),
        "created": serializers.BooleanField(),
        "debounced": serializers.CharField(
            allow_null=True, help_text="joined (input replaced) or dropped (leading window)."
        ),
    },
)


def _http(answer: WebhookAnswer) -> HttpResponse:
    response = HttpResponse(
        answer.content(), status=answer.status, content_type=answer.content_type
    )
    for name, value in answer.headers.items():
        if name.lower() != "content-type":
            response[name] = value
    return response


def _status_url(request, execution) -> str:
    return request.build_absolute_uri(
        reverse(
            "webhook-execution",
            kwargs={"workflow_id": execution.workflow_id, "execution_id": execution.id},
        )
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
            200: OpenApiResponse(
                description="An Idempotency-Key seen before or a leading debounce window: the "
                "execution joined. With webhook_respond on_completion: the execution's output, "
                "or the respond node's (which may set another status code, headers and body)."
            ),
            500: OpenApiResponse(description="on_completion: the execution failed (its error)."),
            504: OpenApiResponse(description="on_completion: the execution timed out."),
            400: OpenApiResponse(description="The body is not a JSON object."),
            404: OpenApiResponse(
                description="Unknown workflow, webhooks disabled, or a wrong token."
            ),
            409: OpenApiResponse(
                description="The workflow is inactive (or, on_completion, the execution was "
                "cancelled)."
            ),
            413: OpenApiResponse(description="The body is too large."),
        },
    )
    def post(self, request, workflow_id: str):
        key = idempotency_key(request)
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
            triggered = webhook_trigger(
                workflow_id=workflow_id,
                token=request.headers.get(TOKEN_HEADER),
                input=payload,
                idempotency_key=key,
            )
        except WebhookNotFound:
            raise NotFound() from None
        except DebounceKeyError as exc:
            raise ValidationError({"body": [f"debounce key: {exc}"]}) from None
        except ConcurrencyKeyError as exc:
            raise ValidationError({"body": [f"concurrency key: {exc}"]}) from None
        execution = triggered.execution
        workflow = execution.workflow
        if workflow.webhook_respond == WebhookRespond.ON_COMPLETION:
            return _http(
                webhook_result(
                    workflow=workflow,
                    triggered=triggered,
                    status_url=_status_url(request, execution),
                )
            )
        return Response(
            {
                "id": str(execution.id),
                "execution_id": str(execution.id),
                "workflow_id": str(execution.workflow_id),
                "status": execution.status,
                "created": triggered.created,
                "debounced": triggered.debounced,
            },
            status=status.HTTP_202_ACCEPTED if triggered.accepted else status.HTTP_200_OK,
        )


class WebhookExecutionView(APIView):
    """The status URL a synchronous webhook gives when the execution outlasts its wait:
    the same answer the webhook would have given, now (no waiting)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="webhook_execution",
        parameters=[
            OpenApiParameter(
                TOKEN_HEADER,
                str,
                OpenApiParameter.HEADER,
                required=True,
                description="The workflow's webhook token.",
            )
        ],
        responses={
            200: OpenApiResponse(description="Finished: the output (or the respond node's)."),
            202: _accepted,
            404: OpenApiResponse(description="Unknown workflow or execution, or a wrong token."),
        },
    )
    def get(self, request, workflow_id: str, execution_id: str):
        try:
            workflow = webhook_workflow(
                workflow_id=workflow_id, token=request.headers.get(TOKEN_HEADER)
            )
            execution = webhook_execution(workflow=workflow, execution_id=execution_id)
        except WebhookNotFound:
            raise NotFound() from None
        return _http(
            webhook_answer(
                workflow=workflow,
                execution=execution,
                status_url=_status_url(request, execution),
            )
        )
