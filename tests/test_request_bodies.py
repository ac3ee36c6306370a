"""Request bodies as a real server receives them: chunked bodies read whole (within the size
limit, 413 past it) through gunicorn, never accepted and dropped."""

from __future__ import annotations

import json

import pytest
from rest_framework.authtoken.models import Token

from executions.models import Execution, Workflow
from tests.support.web import *  # noqa: F403  (fixtures)
from tests.support.workflows import make_workflow, node

pytestmark = [pytest.mark.django_db(transaction=True)]


def _hooked(user) -> Workflow:
    workflow = make_workflow(user, [node("a")], webhook_enabled=True)
    return Workflow.objects.get(pk=workflow.pk)


def test_chunked_webhook_body_becomes_the_input(web_server, user):
    workflow = _hooked(user)
    body = json.dumps({"order": {"id": 7, "lines": ["x" * 100] * 50}}).encode()
    chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)]
    status, _, payload = web_server.request(
        "POST",
        f"/api/hooks/{workflow.pk}/",
        chunks,
        {"Content-Type": "application/json", "X-WeConnect-Token": workflow.webhook_token},
    )
    assert status == 202, payload
    execution = Execution.objects.get(pk=json.loads(payload)["execution_id"])
    assert execution.input == json.loads(body)


def test_chunked_execute_body_becomes_the_input(web_server, user):
    workflow = make_workflow(user, [node("a")])
    token = Token.objects.create(user=user).key
    body = json.dumps({"input": {"n": 42}}).encode()
    status, _, payload = web_server.request(
        "POST",
        f"/api/workflows/{workflow.pk}/execute/",
        [body[:5], body[5:]],
        {"Content-Type": "application/json", "Authorization": f"Token {token}"},
    )
    assert status == 202, payload
    assert Execution.objects.get(pk=json.loads(payload)["id"]).input == {"n": 42}


def test_chunked_body_over_the_limit_is_413(web_server, user, settings):
    workflow = _hooked(user)
    limit = settings.WECONNECT_MAX_REQUEST_BYTES
    big = json.dumps({"blob": "y" * (limit + 1_000_000)}).encode()
    chunks = [big[i : i + 65536] for i in range(0, len(big), 65536)]
    status, _, payload = web_server.request(
        "POST",
        f"/api/hooks/{workflow.pk}/",
        chunks,
        {"Content-Type": "application/json", "X-WeConnect-Token": workflow.webhook_token},
    )
    assert status == 413, payload
    assert "exceeds the limit" in json.loads(payload)["detail"]
    assert not Execution.objects.exists()


def test_sized_body_over_the_limit_is_still_413(web_server, user, settings):
    workflow = _hooked(user)
    status, _, _ = web_server.request(
        "POST",
        f"/api/hooks/{workflow.pk}/",
        None,
        {
            "Content-Type": "application/json",
            "X-WeConnect-Token": workflow.webhook_token,
            "Content-Length": str(settings.WECONNECT_MAX_REQUEST_BYTES + 1),
        },
    )
    assert status == 413


def test_chunked_body_without_the_wsgi_wrapper_is_411_not_lost(api, user):
    """Django's own handler (here the test client, elsewhere another entry point) cannot read
    a length-less body: refused, never read as empty."""
    workflow = make_workflow(user, [node("a")])
    res = api.generic(
        "POST",
        f"/api/workflows/{workflow.pk}/execute/",
        json.dumps({"input": {"n": 1}}),
        content_type="application/json",
        HTTP_TRANSFER_ENCODING="chunked",
        CONTENT_LENGTH="",
    )
    assert res.status_code == 411, res.content
    assert not Execution.objects.exists()
