"""Webhook trigger: POST /api/hooks/{workflow_id}/ with X-WeConnect-Token, and token rotation."""

from __future__ import annotations

import json
import uuid

import pytest
from rest_framework.test import APIClient

from executions.models import Execution, Workflow
from tests.support.workflows import node, wait_for, workflow_doc

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def hooked(api):
    """A webhook-enabled workflow created through the API, and its token (from rotation)."""
    res = api.post(
        "/api/workflows/", workflow_doc([node("a")], webhook_enabled=True), format="json"
    )
    assert res.status_code == 201, res.json()
    doc = res.json()
    token = api.post(f"/api/workflows/{doc['id']}/webhook-token/").json()["webhook_token"]
    return doc, token


def hook(workflow_id, body=b"{}", token=None, content_type="application/json", **headers):
    client = APIClient()
    if token is not None:
        headers["HTTP_X_WECONNECT_TOKEN"] = token
    if not isinstance(body, bytes | str):
        body = json.dumps(body)
    return client.generic(
        "POST", f"/api/hooks/{workflow_id}/", body, content_type=content_type, **headers
    )


def test_workflow_output_shows_url_never_token(api, hooked):
    doc, token = hooked
    assert doc["webhook_enabled"] is True
    assert doc["webhook_url"] == f"http://testserver/api/hooks/{doc['id']}/"
    listed = api.get(f"/api/workflows/{doc['id']}/").json()
    assert "webhook_token" not in listed and token not in json.dumps(listed)
    assert token not in json.dumps(api.get("/api/workflows/").json())
    plain = api.post("/api/workflows/", workflow_doc([node("a")]), format="json").json()
    assert plain["webhook_enabled"] is False and plain["webhook_url"] is None


@pytest.mark.worker
def test_webhook_starts_an_execution_with_the_body_as_input(worker, hooked):
    doc, token = hooked
    res = hook(doc["id"], {"order": {"id": 7}}, token)
    assert res.status_code == 202, res.content
    body = res.json()
    assert body["workflow_id"] == doc["id"] and body["created"] is True
    assert body["id"] == body["execution_id"]
    ex = wait_for(body["execution_id"])
    assert ex.status == "succeeded" and ex.trigger == "webhook"
    assert ex.input == {"order": {"id": 7}} and ex.output == {"a": {"order": {"id": 7}}}


def test_wrong_missing_or_unknown_is_404_alike(hooked, api):
    doc, token = hooked
    assert hook(doc["id"], token="x" + token[1:]).status_code == 404
    assert hook(doc["id"]).status_code == 404
    assert hook(doc["id"], token="").status_code == 404
    assert hook(uuid.uuid4(), token=token).status_code == 404
    assert hook("not-a-uuid", token=token).status_code == 404
    # Webhooks turned off: the old token no longer opens anything.
    off = workflow_doc([node("a")], webhook_enabled=False)
    assert api.put(f"/api/workflows/{doc['id']}/", off, format="json").status_code == 200
    res = hook(doc["id"], token=token)
    assert res.status_code == 404 and res.json() == {"detail": "Not found."}
    assert not Execution.objects.exists()


def test_inactive_workflow_is_409(hooked, api):
    doc, token = hooked
    inactive = workflow_doc([node("a")], webhook_enabled=True, is_active=False)
    assert api.put(f"/api/workflows/{doc['id']}/", inactive, format="json").status_code == 200
    res = hook(doc["id"], token=token)
    assert res.status_code == 409 and "inactive" in res.json()["detail"]


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b"{not json", "application/json", "not valid JSON"),
        (b"[1, 2]", "application/json", "must be a JSON object, not list"),
        (b'"text"', "application/json", "must be a JSON object, not str"),
        (b"a=1&b=2", "application/x-www-form-urlencoded", "not valid JSON"),
        (b"\xff\xfe", "application/json", "not valid JSON"),
        (b'{"n": NaN}', "application/json", "NaN is not valid JSON"),
        (b'{"a": ' * 5000 + b"1" + b"}" * 5000, "application/json", "nested too deeply"),
        (b'{"a": "x\\u0000y"}', "application/json", "NUL character"),
    ],
)
def test_bad_bodies_are_400_naming_the_body(hooked, body, content_type, reason):
    doc, token = hooked
    res = hook(doc["id"], body, token, content_type=content_type)
    assert res.status_code == 400
    assert reason in res.json()["body"][0]
    assert not Execution.objects.exists()


def test_oversized_body_is_413(hooked, settings):
    doc, token = hooked
    big = json.dumps({"blob": "x" * (settings.WECONNECT_MAX_REQUEST_BYTES + 1)})
    res = hook(doc["id"], big, token)
    assert res.status_code == 413
    assert not Execution.objects.exists()


def test_idempotency_key_returns_the_same_execution(hooked):
    doc, token = hooked
    first = hook(doc["id"], {"n": 1}, token, HTTP_IDEMPOTENCY_KEY="delivery-1")
    again = hook(doc["id"], {"n": 1}, token, HTTP_IDEMPOTENCY_KEY="delivery-1")
    assert first.status_code == 202 and again.status_code == 200
    assert (
        first.json()["execution_id"] == again.json()["execution_id"]
        and again.json()["created"] is False
    )
    other = hook(doc["id"], {"n": 2}, token, HTTP_IDEMPOTENCY_KEY="delivery-2")
    assert other.status_code == 202 and other.json()["execution_id"] != first.json()["execution_id"]
    bad = hook(doc["id"], {}, token, HTTP_IDEMPOTENCY_KEY="k" * 256)
    assert bad.status_code == 400 and "Idempotency-Key" in bad.json()
    assert Execution.objects.count() == 2


def test_rotation_replaces_the_token_owner_only(hooked, api, other_api):
    doc, old = hooked
    res = api.post(f"/api/workflows/{doc['id']}/webhook-token/")
    assert res.status_code == 200
    new = res.json()["webhook_token"]
    assert new != old and len(new) >= 32
    assert res.json()["webhook_url"] == doc["webhook_url"]
    assert hook(doc["id"], token=old).status_code == 404
    assert hook(doc["id"], token=new).status_code == 202
    assert other_api.post(f"/api/workflows/{doc['id']}/webhook-token/").status_code == 404
    assert APIClient().post(f"/api/workflows/{doc['id']}/webhook-token/").status_code == 401
    assert Workflow.objects.get(id=doc["id"]).webhook_token == new


def test_rotation_without_webhooks_is_409(api):
    doc = api.post("/api/workflows/", workflow_doc([node("a")]), format="json").json()
    res = api.post(f"/api/workflows/{doc['id']}/webhook-token/")
    assert res.status_code == 409 and "not enabled" in res.json()["detail"]


def test_enabling_webhooks_on_save_generates_a_token(api):
    doc = api.post("/api/workflows/", workflow_doc([node("a")]), format="json").json()
    assert Workflow.objects.get(id=doc["id"]).webhook_token == ""
    on = workflow_doc([node("a")], webhook_enabled=True)
    assert api.put(f"/api/workflows/{doc['id']}/", on, format="json").json()["webhook_url"]
    token = Workflow.objects.get(id=doc["id"]).webhook_token
    assert len(token) >= 32
    assert hook(doc["id"], token=token).status_code == 202
