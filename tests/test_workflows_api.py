"""The workflow API: CRUD, versions, owner isolation and authentication."""

from __future__ import annotations

from datetime import datetime

import pytest
from rest_framework.test import APIClient

from executions.models import Connection, Node, Workflow, WorkflowVersion
from tests.conftest import client_for
from tests.support.workflows import edge, node, workflow_doc

pytestmark = pytest.mark.django_db

URL = "/api/workflows/"


def doc(name: str = "sync", **extra):
    return workflow_doc(
        [node("start"), node("end", name="End")], [edge("start", "end")], name=name, **extra
    )


def create(api, name: str = "sync", **extra) -> dict:
    response = api.post(URL, doc(name, **extra), format="json")
    assert response.status_code == 201, response.json()
    return response.json()


# --- Create and read -------------------------------------------------------------------------


def test_create_answers_201_with_the_whole_document(api, user):
    body = create(api, description="orders", timeout_seconds=120)
    assert body["version"] == 1 and body["owner"] == user.id
    assert body["name"] == "sync" and body["description"] == "orders"
    assert (
        body["is_active"] is True
        and body["timeout_seconds"] == 120
        and body["webhook_enabled"] is False
    )
    for stamp in ("created_at", "updated_at"):
        datetime.fromisoformat(body[stamp].replace("Z", "+00:00"))
    # Defaults are filled in, so what comes back is what runs.
    start = body["nodes"][0]
    assert start == {
        "key": "start",
        "type": "noop",
        "name": "",
        "config": {},
        "retry": start["retry"],
        "timeout_seconds": 300,
    }
    assert set(start["retry"]) == {
        "max_retries",
        "backoff_seconds",
        "max_backoff_seconds",
        "jitter",
    }
    assert body["connections"] == [
        {"source": "start", "target": "end", "type": "success", "branch": None}
    ]
    workflow = Workflow.objects.get(id=body["id"])
    assert workflow.owner == user
    assert list(
        Node.objects.filter(workflow=workflow).order_by("position").values_list("key", flat=True)
    ) == ["start", "end"]
    assert Connection.objects.filter(workflow=workflow).count() == 1
    assert (
        WorkflowVersion.objects.get(workflow=workflow, version=1).graph["nodes"][1]["name"] == "End"
    )


def test_retrieve(api):
    body = create(api)
    response = api.get(f"{URL}{body['id']}/")
    assert response.status_code == 200
    assert response.json() == body


def test_retrieve_unknown_or_malformed_id_is_404(api):
    assert api.get(f"{URL}00000000-0000-0000-0000-000000000000/").status_code == 404
    assert api.get(f"{URL}not-a-uuid/").status_code == 404


def test_list_is_paginated_newest_first(api):
    ids = [create(api, f"w{i}")["id"] for i in range(3)]
    page = api.get(URL, {"page_size": 2}).json()
    assert page["count"] == 3
    assert [w["id"] for w in page["results"]] == ids[::-1][:2]
    assert page["next"] and page["previous"] is None
    second = api.get(URL, {"page_size": 2, "page": 2}).json()
    assert [w["id"] for w in second["results"]] == [ids[0]]
    assert second["results"][0]["nodes"][0]["key"] == "start"


def test_list_page_out_of_range_is_404_not_500(api):
    create(api)
    assert api.get(URL, {"page": 99}).status_code == 404
    assert api.get(URL, {"page": "x"}).status_code == 404


# --- Replace ---------------------------------------------------------------------------------


def test_put_replaces_and_bumps_the_version_only_on_change(api):
    body = create(api)
    url = f"{URL}{body['id']}/"

    same = api.put(url, doc(), format="json")
    assert same.status_code == 200 and same.json()["version"] == 1

    renamed = api.put(url, doc("renamed"), format="json").json()
    assert renamed["version"] == 2 and renamed["name"] == "renamed"

    settings_changed = api.put(url, doc("renamed", timeout_seconds=60), format="json").json()
    assert settings_changed["version"] == 3

    graph = workflow_doc([node("only", "noop")], name="renamed", timeout_seconds=60)
    replaced = api.put(url, graph, format="json").json()
    assert replaced["version"] == 4
    assert [n["key"] for n in replaced["nodes"]] == ["only"] and replaced["connections"] == []
    assert list(Node.objects.filter(workflow_id=body["id"]).values_list("key", flat=True)) == [
        "only"
    ]
    assert not Connection.objects.filter(workflow_id=body["id"]).exists()

    # Every version's snapshot stays (executions reference them).
    versions = WorkflowVersion.objects.filter(workflow_id=body["id"]).order_by("version")
    assert [v.version for v in versions] == [1, 2, 3, 4]
    assert versions[0].graph["name"] == "sync"
    assert api.put(url, graph, format="json").json()["version"] == 4

    assert replaced["id"] == body["id"] and replaced["created_at"] == body["created_at"]


def test_put_with_a_partial_document_is_400(api):
    body = create(api)
    response = api.put(f"{URL}{body['id']}/", {"name": "just a name"}, format="json")
    assert response.status_code == 400 and "nodes" in response.json()


def test_patch_is_not_allowed(api):
    body = create(api)
    response = api.patch(f"{URL}{body['id']}/", {"name": "x"}, format="json")
    assert response.status_code == 405
    assert "PATCH" not in response["Allow"]
    assert Workflow.objects.get(id=body["id"]).name == "sync"


# --- Delete ----------------------------------------------------------------------------------


def test_delete(api):
    body = create(api)
    response = api.delete(f"{URL}{body['id']}/")
    assert response.status_code == 204
    assert not Workflow.objects.filter(id=body["id"]).exists()
    assert not Node.objects.filter(workflow_id=body["id"]).exists()
    assert api.get(f"{URL}{body['id']}/").status_code == 404
    assert api.delete(f"{URL}{body['id']}/").status_code == 404


# --- Owners ----------------------------------------------------------------------------------


def test_another_users_workflow_is_invisible(api, other_api):
    mine = create(api)
    url = f"{URL}{mine['id']}/"
    assert other_api.get(url).status_code == 404
    assert other_api.put(url, doc("stolen"), format="json").status_code == 404
    assert other_api.delete(url).status_code == 404
    assert other_api.post(f"{url}execute/", {}, format="json").status_code == 404
    assert other_api.get(URL).json()["count"] == 0
    workflow = Workflow.objects.get(id=mine["id"])
    assert workflow.name == "sync" and workflow.version == 1
    assert not workflow.executions.exists()


def test_superuser_sees_and_manages_all(api, other_api, django_user_model):
    a = create(api, "alice's")
    b = create(other_api, "bob's")
    admin = client_for(
        django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    )
    listed = admin.get(URL).json()
    assert {w["id"] for w in listed["results"]} == {a["id"], b["id"]}
    assert admin.get(f"{URL}{b['id']}/").json()["owner"] == b["owner"]
    replaced = admin.put(f"{URL}{a['id']}/", doc("by admin"), format="json").json()
    # Replacing keeps the owner.
    assert replaced["owner"] == a["owner"] and replaced["version"] == 2
    assert admin.delete(f"{URL}{b['id']}/").status_code == 204


# --- Authentication --------------------------------------------------------------------------


def test_unauthenticated_requests_are_401(user):
    anonymous = APIClient()
    created = client_for(user).post(URL, doc(), format="json").json()
    for method, url in [
        ("get", URL),
        ("post", URL),
        ("get", f"{URL}{created['id']}/"),
        ("put", f"{URL}{created['id']}/"),
        ("delete", f"{URL}{created['id']}/"),
        ("post", f"{URL}{created['id']}/execute/"),
    ]:
        response = getattr(anonymous, method)(url, doc(), format="json")
        assert response.status_code == 401, (method, url)
        assert response["WWW-Authenticate"] == "Token"
    assert Workflow.objects.count() == 1


def test_a_wrong_token_is_401(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert client.get(URL).status_code == 401
    client.credentials(HTTP_AUTHORIZATION="Token")
    assert client.get(URL).status_code == 401


def test_token_auth(api, user):
    create(api)
    listed = api.get(URL).json()
    assert listed["count"] == 1 and listed["results"][0]["owner"] == user.id


def test_session_auth(user):
    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username="alice", password="pw-alice-123")
    assert client.get(URL).status_code == 200
    # Session writes need the CSRF token, like any form post.
    assert client.post(URL, doc(), format="json").status_code == 403
    client.get("/admin/login/")
    csrf = client.cookies["csrftoken"].value
    response = client.post(URL, doc(), format="json", HTTP_X_CSRFTOKEN=csrf)
    assert response.status_code == 201
    assert response.json()["owner"] == user.id
