"""The API's own pages: Swagger's example bodies, the 401 for a malformed Authorization
header, and the browsable API's forms for actions."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.support.workflows import make_workflow, node

pytestmark = pytest.mark.django_db


def test_swagger_has_example_bodies(api):
    schema = api.get("/api/schema/", {"format": "json"}, HTTP_ACCEPT="application/json").json()
    execute = schema["paths"]["/api/workflows/{id}/execute/"]["post"]
    examples = execute["requestBody"]["content"]["application/json"]["examples"]
    assert any(e["value"]["input"].get("order_id") == 42 for e in examples.values())
    bulk = schema["paths"]["/api/executions/bulk/"]["post"]
    examples = bulk["requestBody"]["content"]["application/json"]["examples"]
    assert any(e["value"]["action"] == "retry" for e in examples.values())


def test_401_says_the_token_prefix_is_missing(user):
    key = Token.objects.create(user=user).key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=key)
    response = client.get("/api/workflows/")
    assert response.status_code == 401
    assert "'Token ' prefix is missing" in response.json()["detail"]
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    response = client.get("/api/workflows/")
    assert response.status_code == 401 and "'Bearer' is not accepted" in response.json()["detail"]
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/workflows/").status_code == 200
    # No header at all: still the plain 401 with the challenge.
    response = APIClient().get("/api/workflows/")
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Token"


def test_browsable_execute_form_offers_the_input_only(client, user):
    wf = make_workflow(user, [node("a")])
    client.force_login(user)
    response = client.get(f"/api/workflows/{wf.id}/execute/", HTTP_ACCEPT="text/html")
    html = response.content.decode()
    assert "&quot;input&quot;" in html
    assert "&quot;nodes&quot;" not in html and "&quot;webhook_enabled&quot;" not in html
