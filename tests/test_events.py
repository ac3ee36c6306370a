"""Waiting for the outside world: the wait_for_event node type, resuming it (API, resume link,
events, admin), events that start workflows, idempotent delivery, retention and time-outs,
against the real worker."""

from __future__ import annotations

import time
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from executions.api.serializers import WorkflowInputSerializer
from executions.events.models import Event, EventWait
from executions.events.services import event_retention_sweep
from executions.events.waits import resume_token, resume_url
from executions.models import Execution, NodeRun
from executions.services.executions import execution_create
from executions.services.workflows import workflow_create
from tests.support.workflows import edge, make_workflow, node, runs_by_node, wait_for, workflow_doc
from tests.test_nodes_examples import load

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

APPROVAL_SCHEMA = {
    "type": "object",
    "properties": {"approved": {"type": "boolean"}, "comment": {"type": "string"}},
    "required": ["approved"],
}


def wait_parked(execution_id, node_key: str = "wait", timeout: float = 60) -> NodeRun:
    """The wait node once it has parked: queued, its wait open, no worker holding it."""
    deadline = time.monotonic() + timeout
    while True:
        run = NodeRun.objects.get(execution_id=execution_id, node=node_key)
        if run.status == "queued" and run.state and "event" in run.state:
            return run
        assert run.status in ("pending", "queued", "running"), (run.status, run.error)
        assert time.monotonic() < deadline, f"{node_key} never parked: {run.status}"
        time.sleep(0.05)


def approval_workflow(owner, **wait_config):
    config = {"event": "refund.decided", "match": "{{ input.order }}", **wait_config}
    return make_workflow(
        owner,
        [node("wait", "wait_for_event", config=config), node("after")],
        [edge("wait", "after")],
    )


def start(workflow, input=None) -> Execution:
    execution, created = execution_create(workflow=workflow, input=input or {})
    assert created
    return execution


# --- waiting and resuming through the API -------------------------------------------------------


def test_waiting_run_shows_what_it_waits_for_and_resumes_with_the_payload(worker, api, user):
    wf = approval_workflow(user, schema=APPROVAL_SCHEMA, timeout_seconds=3600)
    ex = start(wf, {"order": "A-1"})
    run = wait_parked(ex.id)
    assert run.dispatched_at is None  # no message exists for it while it waits
    doc = api.get(f"/api/executions/{ex.id}/").json()
    waiting = {r["node"]: r for r in doc["node_runs"]}["wait"]["waiting_for"]
    assert waiting["event"] == "refund.decided" and waiting["key"] == "A-1"
    until = timezone.datetime.fromisoformat(waiting["until"])
    assert 3500 < (until - timezone.now()).total_seconds() <= 3600

    bad = api.post(
        f"/api/executions/{ex.id}/resume/",
        {"node": "wait", "data": {"approved": "yes"}},
        format="json",
    )
    assert bad.status_code == 400
    assert "approved" in str(bad.json()["data"]) and "boolean" in str(bad.json()["data"])

    res = api.post(
        f"/api/executions/{ex.id}/resume/",
        {"node": "wait", "data": {"approved": True, "comment": "fine"}},
        format="json",
    )
    assert res.status_code == 200, res.json()
    done = wait_for(ex.id)
    assert done.status == "succeeded", done.error
    runs = runs_by_node(done)
    assert runs["wait"].output == {"approved": True, "comment": "fine"}
    assert runs["wait"].attempts == 1  # parking is not an attempt
    assert runs["after"].input == {"approved": True, "comment": "fine"}
    assert EventWait.objects.get(node_run=runs["wait"]).source == "api"

    again = api.post(
        f"/api/executions/{ex.id}/resume/",
        {"node": "wait", "data": {"approved": False}},
        format="json",
    )
    assert again.status_code == 409


def test_resume_is_owner_only_and_names_the_problem(worker, api, other_api, user):
    wf = approval_workflow(user)
    ex = start(wf, {"order": "A-2"})
    wait_parked(ex.id)
    other = other_api.post(
        f"/api/executions/{ex.id}/resume/", {"node": "wait", "data": {}}, format="json"
    )
    assert other.status_code == 404
    unknown = api.post(
        f"/api/executions/{ex.id}/resume/", {"node": "nope", "data": {}}, format="json"
    )
    assert unknown.status_code == 409 and "nope" in unknown.json()["detail"]
    not_waiting = api.post(
        f"/api/executions/{ex.id}/resume/", {"node": "after", "data": {}}, format="json"
    )
    assert not_waiting.status_code == 409 and "not waiting" in not_waiting.json()["detail"]
    bad = api.post(f"/api/executions/{ex.id}/resume/", {"data": [1]}, format="json")
    assert bad.status_code == 400 and "data" in bad.json()
    assert NodeRun.objects.get(execution=ex, node="wait").status == "queued"


def test_resume_after_cancel_is_a_conflict(worker, api, user):
    wf = approval_workflow(user)
    ex = start(wf, {"order": "A-3"})
    wait_parked(ex.id)
    assert api.post(f"/api/executions/{ex.id}/cancel/").status_code == 200
    res = api.post(f"/api/executions/{ex.id}/resume/", {"node": "wait", "data": {}}, format="json")
    assert res.status_code == 409
    assert EventWait.objects.get(execution=ex).payload is None


# --- time-outs ------------------------------------------------------------------------------------


def test_timeout_takes_the_timeout_branch_only(worker, api, user):
    wf = make_workflow(
        user,
        [
            node("wait", "wait_for_event", config={"event": "never", "timeout_seconds": 1}),
            node("approved"),
            node("escalate"),
        ],
        [edge("wait", "approved"), edge("wait", "escalate", branch="timeout")],
    )
    ex = start(wf)
    done = wait_for(ex.id, timeout=60)
    assert done.status == "succeeded", done.error
    runs = runs_by_node(done)
    assert runs["wait"].branch == "timeout" and runs["wait"].output["timed_out"] is True
    assert runs["escalate"].status == "succeeded"
    assert runs["approved"].status == "skipped"
    late = api.post(f"/api/executions/{ex.id}/resume/", {"node": "wait", "data": {}}, format="json")
    assert late.status_code == 409


def test_timeout_without_a_timeout_connection_fails_with_event_timeout(worker, api, user):
    wf = approval_workflow(user, timeout_seconds=1)
    ex = start(wf, {"order": "A-4"})
    done = wait_for(ex.id, timeout=60)
    assert done.status == "failed"
    wait = runs_by_node(done)["wait"]
    assert wait.error["type"] == "EventTimeout"
    assert "'refund.decided' with key 'A-4'" in wait.error["message"]
    assert EventWait.objects.get(node_run=wait).outcome == "timed_out"
    late = api.post(f"/api/executions/{ex.id}/resume/", {"node": "wait", "data": {}}, format="json")
    assert late.status_code == 409


# --- resume links -------------------------------------------------------------------------------


def test_resume_link_in_a_template_resumes_that_run_once(worker, user, settings):
    wf = make_workflow(
        user,
        [
            node(
                "notify",
                "transform",
                config={"fields": {"text": "Approve: {{ execution.resume_url }}"}},
            ),
            node("wait", "wait_for_event", config={"event": "approval", "schema": APPROVAL_SCHEMA}),
        ],
        [edge("notify", "wait")],
    )
    ex = start(wf)
    other = start(wf)
    wait_parked(ex.id)
    wait_parked(other.id)
    text = NodeRun.objects.get(execution=ex, node="notify").output["text"]
    url = text.removeprefix("Approve: ")
    assert url.startswith(settings.WECONNECT_PUBLIC_URL + "/api/resume/")
    path = urlsplit(url).path
    assert path == f"/api/resume/{ex.id}/wait/{resume_token(ex.id, 'wait')}/"

    anonymous = APIClient()
    assert anonymous.get(path).json()["waiting"] is True  # a GET never resumes
    # The link of one run opens nothing else: another execution, another node, a changed token.
    forged = [
        path.replace(str(ex.id), str(other.id)),
        path.replace("/wait/", "/notify/"),
        path[:-3] + ("0" if path[-3] != "0" else "1") + path[-2:],
    ]
    for bad in forged:
        assert anonymous.post(bad, {"approved": True}, format="json").status_code == 404, bad
    assert anonymous.post(path, {"approved": "y"}, format="json").status_code == 400

    first = anonymous.post(path, {"approved": False, "comment": "no"}, format="json")
    assert first.status_code == 200, first.content
    second = anonymous.post(path, {"approved": True}, format="json")
    assert second.status_code == 409
    done = wait_for(ex.id)
    assert done.status == "succeeded"
    assert runs_by_node(done)["wait"].output == {"approved": False, "comment": "no"}
    assert EventWait.objects.get(execution=ex).source == "url"
    assert NodeRun.objects.get(execution=other, node="wait").status == "queued"


# --- events -------------------------------------------------------------------------------------


def test_event_resumes_the_waits_with_its_key_only(worker, api, other_api, user):
    wf = approval_workflow(user)
    mine = start(wf, {"order": "K-1"})
    other_key = start(wf, {"order": "K-2"})
    wait_parked(mine.id)
    wait_parked(other_key.id)
    # Another user's event with the same name and key touches nothing of ours.
    theirs = other_api.post(
        "/api/events/", {"name": "refund.decided", "key": "K-1", "data": {"x": 0}}, format="json"
    )
    assert theirs.status_code == 202 and theirs.json()["resumed"] == []

    res = api.post(
        "/api/events/",
        {"name": "refund.decided", "key": "K-1", "data": {"approved": True}, "id": "evt-1"},
        format="json",
    )
    assert res.status_code == 202, res.json()
    body = res.json()
    assert body["resumed"] == [{"execution": str(mine.id), "node": "wait"}]
    assert body["id"] == "evt-1" and body["duplicate"] is False
    done = wait_for(mine.id)
    assert done.status == "succeeded"
    assert runs_by_node(done)["wait"].output == {"approved": True}
    assert NodeRun.objects.get(execution=other_key, node="wait").status == "queued"


def test_numeric_keys_match_their_text(worker, api, user):
    wf = make_workflow(
        user,
        [node("wait", "wait_for_event", config={"event": "paid", "match": "{{ input.id }}"})],
    )
    ex = start(wf, {"id": 42})
    wait_parked(ex.id)
    res = api.post("/api/events/", {"name": "paid", "key": 42, "data": {}}, format="json")
    assert res.json()["resumed"] == [{"execution": str(ex.id), "node": "wait"}]
    assert wait_for(ex.id).status == "succeeded"


def test_event_before_its_waiter_resumes_it_at_once(worker, api, user):
    res = api.post(
        "/api/events/",
        {"name": "refund.decided", "key": "EARLY", "data": {"approved": True}},
        format="json",
    )
    assert res.status_code == 202 and res.json()["resumed"] == []
    wf = approval_workflow(user, timeout_seconds=3600)
    ex = start(wf, {"order": "EARLY"})
    done = wait_for(ex.id, timeout=60)
    assert done.status == "succeeded"
    wait = runs_by_node(done)["wait"]
    assert wait.output == {"approved": True}
    assert EventWait.objects.get(node_run=wait).event_id == Event.objects.get(key="EARLY").id


def test_event_older_than_the_retention_window_is_not_used(worker, api, user, settings):
    api.post(
        "/api/events/", {"name": "refund.decided", "key": "OLD", "data": {"a": 1}}, format="json"
    )
    Event.objects.filter(key="OLD").update(
        created_at=timezone.now() - timedelta(seconds=settings.WECONNECT_EVENT_RETENTION + 60)
    )
    wf = approval_workflow(user, timeout_seconds=1)
    ex = start(wf, {"order": "OLD"})
    done = wait_for(ex.id, timeout=60)
    assert done.status == "failed"
    assert runs_by_node(done)["wait"].error["type"] == "EventTimeout"
    # And the retention pass deletes it.
    assert event_retention_sweep() == 1
    assert not Event.objects.filter(key="OLD").exists()


def test_event_payload_that_does_not_fit_the_schema_resumes_nothing(worker, api, user):
    wf = approval_workflow(user, schema=APPROVAL_SCHEMA)
    ex = start(wf, {"order": "S-1"})
    wait_parked(ex.id)
    res = api.post(
        "/api/events/", {"name": "refund.decided", "key": "S-1", "data": {}}, format="json"
    )
    body = res.json()
    assert body["resumed"] == []
    assert body["not_resumed"][0]["execution"] == str(ex.id)
    assert "'approved' is a required property" in str(body["not_resumed"][0]["reason"])
    assert NodeRun.objects.get(execution=ex, node="wait").status == "queued"


def test_events_start_workflows_once_per_id(worker, api, user):
    wf = make_workflow(
        user,
        [node("a")],
        events=["order.created", {"name": "order.paid", "filter": "data.total > `100`"}],
        name="on orders",
    )
    off = make_workflow(user, [node("a")], events=["order.created"], is_active=False, name="off")
    doc = api.get(f"/api/workflows/{wf.id}/").json()
    assert doc["events"] == [
        "order.created",
        {"name": "order.paid", "filter": "data.total > `100`"},
    ]

    res = api.post(
        "/api/events/",
        {"name": "order.created", "key": "o-1", "data": {"total": 5}, "id": "d-1"},
        format="json",
    )
    assert res.status_code == 202
    started = res.json()["started"]
    assert [s["workflow"] for s in started] == [str(wf.id)]
    ex = wait_for(started[0]["execution"])
    assert ex.status == "succeeded" and ex.trigger == "event"
    assert ex.input["name"] == "order.created" and ex.input["key"] == "o-1"
    assert ex.input["data"] == {"total": 5} and ex.input["id"] == "d-1"
    assert not Execution.objects.filter(workflow=off).exists()

    again = api.post(
        "/api/events/",
        {"name": "order.created", "key": "o-1", "data": {"total": 5}, "id": "d-1"},
        format="json",
    )
    assert again.status_code == 200
    assert again.json()["duplicate"] is True and again.json()["started"] == started
    assert Execution.objects.filter(workflow=wf).count() == 1
    assert Event.objects.filter(event_id="d-1").count() == 1

    small = api.post(
        "/api/events/", {"name": "order.paid", "data": {"total": 50}}, format="json"
    ).json()
    large = api.post(
        "/api/events/", {"name": "order.paid", "data": {"total": 500}}, format="json"
    ).json()
    assert small["started"] == [] and len(large["started"]) == 1


def test_bad_events_and_settings_are_400s_naming_the_field(api):
    assert "name" in api.post("/api/events/", {"key": "k"}, format="json").json()
    res = api.post("/api/events/", {"name": "x", "key": {"a": 1}}, format="json")
    assert res.status_code == 400 and "key" in res.json()
    res = api.post("/api/events/", b"[1]", content_type="application/json")
    assert res.status_code == 400 and "body" in res.json()
    res = api.post("/api/events/", {"name": "x", "id": "i" * 256}, format="json")
    assert res.status_code == 400 and "id" in res.json()
    bad = workflow_doc([node("a")], events=[{"name": "x", "filter": "data.["}])
    res = api.post("/api/workflows/", bad, format="json")
    assert res.status_code == 400 and "events[0].filter" in str(res.json()["events"])
    bad = workflow_doc([node("w", "wait_for_event", config={"event": "e", "schema": {"type": 1}})])
    res = api.post("/api/workflows/", bad, format="json")
    assert res.status_code == 400 and "not a valid JSON Schema" in str(res.json())
    bad = workflow_doc([node("w", "wait_for_event", config={"match": "{{ input.x }}"})])
    res = api.post("/api/workflows/", bad, format="json")
    assert res.status_code == 400 and "'event' is a required property" in str(res.json())


def test_event_webhook_with_its_own_rotatable_secret(worker, api, user):
    wf = approval_workflow(user)
    ex = start(wf, {"order": "H-1"})
    wait_parked(ex.id)
    rotated = api.post("/api/events/webhook-token/").json()
    token, url = rotated["webhook_token"], urlsplit(rotated["webhook_url"]).path
    hook = APIClient()
    body = {"name": "refund.decided", "key": "H-1", "data": {"via": "hook"}}
    assert hook.post(url, body, format="json").status_code == 404  # no token
    wrong = hook.post(url, body, format="json", HTTP_X_WECONNECT_TOKEN=token + "x")
    assert wrong.status_code == 404
    newer = api.post("/api/events/webhook-token/").json()
    assert urlsplit(newer["webhook_url"]).path == url  # the URL stays, the secret changes
    old = hook.post(url, body, format="json", HTTP_X_WECONNECT_TOKEN=token)
    assert old.status_code == 404
    res = hook.post(url, body, format="json", HTTP_X_WECONNECT_TOKEN=newer["webhook_token"])
    assert res.status_code == 202
    assert res.json()["resumed"] == [{"execution": str(ex.id), "node": "wait"}]
    assert wait_for(ex.id).status == "succeeded"


# --- admin --------------------------------------------------------------------------------------


def test_admin_approve_and_reject_buttons(worker, admin_client, admin_user, user):
    wf = approval_workflow(user, schema=APPROVAL_SCHEMA)
    approved = start(wf, {"order": "ADM-1"})
    rejected = start(wf, {"order": "ADM-2"})
    wait_parked(approved.id)
    wait_parked(rejected.id)
    page = admin_client.get(f"/admin/executions/execution/{approved.id}/change/").content.decode()
    assert 'value="approve"' in page and 'value="reject"' in page
    action = f"/admin/executions/execution/{approved.id}/approval/"
    assert f'action="{action}"' in page

    r = admin_client.post(action, {"node": "wait", "decision": "approve", "comment": "ok"})
    assert r.status_code == 302
    r = admin_client.post(
        f"/admin/executions/execution/{rejected.id}/approval/",
        {"node": "wait", "decision": "reject", "comment": "too late"},
    )
    assert r.status_code == 302
    user_name = admin_user.get_username()
    a, b = wait_for(approved.id), wait_for(rejected.id)
    assert runs_by_node(a)["wait"].output == {"approved": True, "comment": "ok", "user": user_name}
    assert runs_by_node(b)["wait"].output == {
        "approved": False,
        "comment": "too late",
        "user": user_name,
    }
    assert EventWait.objects.get(execution=a).source == "admin"
    page = admin_client.get(f"/admin/executions/execution/{a.id}/change/").content.decode()
    assert 'value="approve"' not in page


def test_admin_approval_needs_change_permission(worker, client, django_user_model, user):
    wf = approval_workflow(user)
    ex = start(wf, {"order": "ADM-3"})
    wait_parked(ex.id)
    staff = django_user_model.objects.create_user("viewer", password="pw-viewer-1", is_staff=True)
    client.force_login(staff)
    r = client.post(
        f"/admin/executions/execution/{ex.id}/approval/", {"node": "wait", "decision": "approve"}
    )
    assert r.status_code == 403
    assert EventWait.objects.get(execution=ex).outcome is None


# --- the example ------------------------------------------------------------------------------


def test_refund_approval_example_end_to_end(worker, api, user):
    serializer = WorkflowInputSerializer(data=load("refund-approval.json"))
    serializer.is_valid(raise_exception=True)
    wf = workflow_create(owner=user, data=serializer.validated_data)

    small = api.post(
        "/api/events/",
        {"name": "refund.requested", "key": "O-1", "data": {"amount": 20}},
        format="json",
    ).json()
    ex = wait_for(small["started"][0]["execution"])
    assert ex.status == "succeeded" and ex.trigger == "event"
    assert ex.output["auto_approve"] == {
        "order_id": "O-1",
        "amount": 20,
        "approved": True,
        "by": "policy",
    }

    large = api.post(
        "/api/events/",
        {"name": "refund.requested", "key": "O-2", "data": {"amount": 120}, "id": "rq-2"},
        format="json",
    ).json()
    [started] = large["started"]
    assert started["workflow"] == str(wf.id)
    execution_id = started["execution"]
    wait_parked(execution_id, "approval")
    text = NodeRun.objects.get(execution_id=execution_id, node="ask").output["text"]
    link = urlsplit(text.split(" to ", 1)[1]).path
    res = APIClient().post(link, {"approved": True, "comment": "goodwill"}, format="json")
    assert res.status_code == 200, res.content
    ex = wait_for(execution_id)
    assert ex.status == "succeeded", ex.error
    assert ex.output["refund"] == {
        "order_id": "O-2",
        "amount": 120,
        "approved": True,
        "by": "approver",
        "comment": "goodwill",
    }
    assert runs_by_node(ex)["escalate"].status == "skipped"


def test_resume_link_opened_in_a_browser_offers_approve_and_reject(worker, user):
    wf = approval_workflow(user, schema=APPROVAL_SCHEMA)
    ex = start(wf, {"order": "B-1"})
    wait_parked(ex.id)
    path = urlsplit(resume_url(ex.id, "wait")).path
    browser = APIClient()
    page = browser.get(path, HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8")
    html = page.content.decode()
    assert page.status_code == 200 and 'value="approve"' in html and 'value="reject"' in html
    assert NodeRun.objects.get(execution=ex, node="wait").status == "queued"  # GET: no resume
    done = browser.post(path, {"decision": "reject", "comment": "not eligible"})
    assert done.status_code == 200 and "Rejected" in done.content.decode()
    again = browser.post(path, {"decision": "approve"})
    assert again.status_code == 409 and "already resumed" in again.content.decode()
    assert wait_for(ex.id).status == "succeeded"
    wait = runs_by_node(Execution.objects.get(id=ex.id))["wait"]
    assert wait.output == {"approved": False, "comment": "not eligible"}
