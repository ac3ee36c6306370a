"""Events and resuming: POST /api/events/, the per-user event webhook, and resume links.

Bodies over the request limit are answered 413 by the middleware before these views read
anything."""

from __future__ import annotations

import json

from django.http import Http404
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from executions.api import serializers as s
from executions.errors import Conflict
from executions.events.models import EventWait
from executions.events.resume import execution_resume
from executions.events.services import (
    Delivery,
    EventWebhookNotFound,
    event_deliver,
    event_webhook_owner,
    event_webhook_rotate,
)
from executions.events.waits import PayloadInvalid, resume_token_valid
from executions.models import Execution
from executions.states import EXECUTION_ACTIVE

TOKEN_HEADER = "X-WeConnect-Token"


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def json_object_body(request) -> dict:
    """The request body as a JSON object ({} when empty), or a 400 saying why not."""
    body = request.body
    if not body.strip():
        return {}
    try:
        payload = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError({"body": [f"is not valid JSON: {exc}"]}) from None
    except RecursionError:
        raise ValidationError({"body": ["is nested too deeply"]}) from None
    if not isinstance(payload, dict):
        raise ValidationError({"body": [f"must be a JSON object, not {type(payload).__name__}"]})
    # PostgreSQL's jsonb cannot store the NUL character.
    if "\\u0000" in json.dumps(payload):
        raise ValidationError({"body": ["must not contain the NUL character (\\u0000)"]})
    return payload


def _validated(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def delivery_response(delivery: Delivery) -> Response:
    event = delivery.event
    result = delivery.result
    doc = {
        "id": event.event_id if event.event_id is not None else str(event.id),
        "event": str(event.id),
        "name": event.name,
        "key": event.key,
        "duplicate": not delivery.created,
        "started": result["started"],
        "resumed": result["resumed"],
        "not_resumed": result.get("not_resumed", []),
    }
    return Response(
        s.EventOutputSerializer(doc).data,
        status=status.HTTP_202_ACCEPTED if delivery.created else status.HTTP_200_OK,
    )


def _deliver(owner, data: dict) -> Response:
    return delivery_response(
        event_deliver(
            owner=owner,
            name=data["name"],
            key=data["key"],
            data=data["data"],
            event_id=data["id"],
        )
    )


_EVENT_RESPONSES = {
    202: s.EventOutputSerializer,
    200: s.EventOutputSerializer,
    400: OpenApiResponse(description="A field is missing or malformed (named in the answer)."),
    413: OpenApiResponse(description="The body is too large."),
}


class EventView(APIView):
    parser_classes: list = []  # parsed here, whatever the Content-Type: every bad body is a 400

    @extend_schema(
        operation_id="event_send",
        request=s.EventInputSerializer,
        responses=_EVENT_RESPONSES,
        description="Resume every waiting wait_for_event run of yours whose event name and key "
        "match, and start every active workflow of yours whose `events` lists the name. The "
        "same `id` again answers what the first delivery did (200) and does nothing new.",
    )
    def post(self, request):
        return _deliver(request.user, _validated(s.EventInputSerializer, json_object_body(request)))


class EventWebhookView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    parser_classes: list = []

    @extend_schema(
        operation_id="event_webhook",
        request=s.EventInputSerializer,
        parameters=[
            OpenApiParameter(
                TOKEN_HEADER,
                str,
                OpenApiParameter.HEADER,
                required=True,
                description="The event webhook's token.",
            )
        ],
        responses={**_EVENT_RESPONSES, 404: OpenApiResponse(description="Unknown or wrong token.")},
    )
    def post(self, request, webhook_id: str):
        try:
            owner = event_webhook_owner(
                webhook_id=webhook_id, token=request.headers.get(TOKEN_HEADER)
            )
        except EventWebhookNotFound:
            raise NotFound() from None
        return _deliver(owner, _validated(s.EventInputSerializer, json_object_body(request)))


class EventWebhookTokenView(APIView):
    @extend_schema(
        operation_id="event_webhook_token_rotate",
        request=None,
        responses={200: s.EventWebhookTokenOutputSerializer},
    )
    def post(self, request):
        """A new token for your event webhook (the old one stops working); shown only here."""
        hook, token = event_webhook_rotate(owner=request.user)
        url = request.build_absolute_uri(reverse("event-webhook", kwargs={"webhook_id": hook.pk}))
        return Response({"webhook_token": token, "webhook_url": url})


def _wants_html(request) -> bool:
    """A browser (a person who clicked the link in an e-mail) rather than a program."""
    accept = request.META.get("HTTP_ACCEPT", "")
    return "text/html" in accept and "application/json" not in accept.split("text/html")[0]


def _is_form(request) -> bool:
    return (request.content_type or "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    )


class ResumeLinkView(APIView):
    """A run's resume link: whoever holds it may resume that one node run, once.

    Programs POST a JSON object (the payload). A person who opens the link in a browser gets a
    page with Approve and Reject buttons and a comment, which posts a form: the payload is then
    ``{"approved": true|false, "comment": ...}``. A GET never resumes anything (mail scanners
    and link previews fetch links)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    parser_classes: list = []

    def _wait(self, execution_id: str, node: str, token: str) -> Execution:
        if not resume_token_valid(execution_id, node, token):
            raise NotFound()
        try:
            return get_object_or_404(Execution, pk=execution_id)
        except (Http404, ValueError, ValidationError):
            raise NotFound() from None

    @extend_schema(
        operation_id="resume_link_status",
        responses={200: OpenApiResponse(description="What the node waits for.")},
    )
    def get(self, request, execution_id: str, node: str, token: str):
        """What the node waits for (never resumes: link scanners and previews send GETs)."""
        execution = self._wait(execution_id, node, token)
        wait = EventWait.objects.filter(execution=execution, node=node).first()
        doc = {
            "execution": str(execution.id),
            "node": node,
            "waiting": wait is not None
            and wait.outcome is None
            and wait.until > timezone.now()
            and execution.status in EXECUTION_ACTIVE,
            "outcome": wait.outcome if wait else None,
            "event": wait.name if wait else None,
            "until": wait.until if wait else None,
        }
        if _wants_html(request):
            return TemplateResponse(request._request, "executions/resume_link.html", doc)
        return Response(doc)

    @extend_schema(
        operation_id="resume_link",
        request={"application/json": {"type": "object", "additionalProperties": True}},
        responses={
            200: OpenApiResponse(description="Resumed; the body became the node's output."),
            400: OpenApiResponse(description="The body does not fit the node's schema."),
            404: OpenApiResponse(description="Not a valid resume link."),
            409: OpenApiResponse(description="Already resumed, timed out, or stopped."),
        },
    )
    def post(self, request, execution_id: str, node: str, token: str):
        execution = self._wait(execution_id, node, token)
        if _is_form(request):
            return self._post_form(request, execution, node)
        data = json_object_body(request)
        try:
            wait = execution_resume(
                execution=execution, node=node, data=data, source=EventWait.Source.URL
            )
        except PayloadInvalid as exc:
            raise ValidationError({"data": exc.errors}) from None
        return Response(
            {"execution": str(execution.id), "node": wait.node, "status": "resumed"},
        )

    def _post_form(self, request, execution: Execution, node: str):
        form = request._request.POST
        decision = form.get("decision")
        comment = (form.get("comment") or "").strip()[:2000]
        page = {"node": node, "waiting": False}
        if decision not in ("approve", "reject"):
            page.update(message="Choose Approve or Reject", waiting=True)
            return TemplateResponse(
                request._request, "executions/resume_link.html", page, status=400
            )
        data = {"approved": decision == "approve", "comment": comment}
        try:
            execution_resume(execution=execution, node=node, data=data, source=EventWait.Source.URL)
        except PayloadInvalid as exc:
            page.update(message="This answer is not accepted", errors=exc.errors)
            return TemplateResponse(
                request._request, "executions/resume_link.html", page, status=400
            )
        except Conflict as exc:
            page.update(message="Nothing to decide", errors=[str(exc)])
            return TemplateResponse(
                request._request, "executions/resume_link.html", page, status=409
            )
        page["message"] = "Approved, thank you" if data["approved"] else "Rejected, thank you"
        return TemplateResponse(request._request, "executions/resume_link.html", page)
