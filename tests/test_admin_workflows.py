"""Workflows written in the admin go through the API's services: validation with every error
shown in the form, versioning, schedule sync; a bad row never breaks a list."""

from __future__ import annotations

import json
import re

import pytest
from django_celery_beat.models import PeriodicTask

from executions.models import Execution, Workflow, WorkflowVersion
from tests.support.workflows import edge, make_workflow, node, workflow_doc

pytestmark = pytest.mark.django_db

ADD = "/admin/executions/workflow/add/"


def change_url(wf) -> str:
    return f"/admin/executions/workflow/{wf.pk}/change/"


def errors_of(html: str) -> str:
    found = re.search(r'<ul class="errorlist[^"]*"[^>]*>(.*?)</ul>', html, re.S)
    return found.group(1) if found else ""


def good_doc(**extra):
    return workflow_doc(
        [node("start"), node("end")], [edge("start", "end")], name="from admin", **extra
    )


def test_add_creates_nodes_version_and_the_api_list_works(admin_client, api, user):
    response = admin_client.post(ADD, {"owner": user.pk, "document": json.dumps(good_doc())})
    assert response.status_code == 302, errors_of(response.content.decode())
    wf = Workflow.objects.get(name="from admin")
    assert wf.owner == user and wf.version == 1
    assert list(wf.nodes.order_by("position").values_list("key", flat=True)) == ["start", "end"]
    assert WorkflowVersion.objects.filter(workflow=wf, version=1).exists()
    listed = api.get("/api/workflows/")
    assert listed.status_code == 200
    assert [w["name"] for w in listed.json()["results"]] == ["from admin"]
    assert listed.json()["results"][0]["nodes"][0]["key"] == "start"


def test_add_form_shows_every_error_and_saves_nothing(admin_client, user):
    bad = workflow_doc(
        [node("start", "no_such_type"), node("bad key!")],
        [edge("start", "ghost")],
        name="bad",
        schedule={"cron": "61 * * * *", "timezone": "Mars/Olympus"},
    )
    response = admin_client.post(ADD, {"owner": user.pk, "document": json.dumps(bad)})
    assert response.status_code == 200
    html = response.content.decode()
    errors = errors_of(html)
    for fragment in ("schedule.cron", "schedule.timezone", "nodes[1].key", "ghost"):
        assert fragment in errors, (fragment, errors)
    assert not Workflow.objects.exists()
    # Not JSON at all: the form says so and keeps what was typed.
    response = admin_client.post(ADD, {"owner": user.pk, "document": '{"name": '})
    assert response.status_code == 200 and "valid JSON" in errors_of(response.content.decode())
    assert "{&quot;name&quot;: </textarea>" in response.content.decode()
    assert not Workflow.objects.exists()


def test_edit_makes_a_new_version_and_syncs_the_schedule(admin_client, user):
    wf = make_workflow(user, [node("start")], name="edited")
    page = admin_client.get(change_url(wf)).content.decode()
    assert "&quot;key&quot;: &quot;start&quot;" in page  # the current document, indented
    doc = workflow_doc(
        [node("start"), node("end")],
        [edge("start", "end")],
        name="edited",
        timeout_seconds=99,
        schedule={"cron": "*/5 * * * *", "timezone": "UTC"},
    )
    response = admin_client.post(change_url(wf), {"document": json.dumps(doc)})
    assert response.status_code == 302, errors_of(response.content.decode())
    wf.refresh_from_db()
    assert wf.version == 2 and wf.timeout_seconds == 99
    assert WorkflowVersion.objects.get(workflow=wf, version=2).graph["timeout_seconds"] == 99
    task = PeriodicTask.objects.get(name__startswith=f"workflow:{wf.pk}")
    assert task.name == f"workflow:{wf.pk} (edited)"
    assert task.crontab.minute == "*/5"
    # The list links the workflow to its periodic task and to its executions.
    listing = admin_client.get("/admin/executions/workflow/").content.decode()
    assert f"/admin/django_celery_beat/periodictask/{task.id}/change/" in listing
    assert f"/admin/executions/execution/?workflow__id__exact={wf.pk}" in listing

    # An invalid cron is refused with the reason; nothing changes.
    doc["schedule"] = {"cron": "not a cron"}
    doc["timeout_seconds"] = 5
    response = admin_client.post(change_url(wf), {"document": json.dumps(doc)})
    assert response.status_code == 200 and "schedule.cron" in errors_of(response.content.decode())
    wf.refresh_from_db()
    assert wf.version == 2 and wf.timeout_seconds == 99

    # Saving the same document again makes no new version.
    doc["schedule"], doc["timeout_seconds"] = {"cron": "*/5 * * * *", "timezone": "UTC"}, 99
    assert admin_client.post(change_url(wf), {"document": json.dumps(doc)}).status_code == 302
    wf.refresh_from_db()
    assert wf.version == 2


def test_delete_goes_through_the_service(admin_client, user):
    wf = make_workflow(
        user, [node("start")], schedule={"cron": "0 * * * *", "timezone": "UTC"}, name="gone"
    )
    assert PeriodicTask.objects.filter(name__startswith=f"workflow:{wf.pk}").exists()
    response = admin_client.post(f"/admin/executions/workflow/{wf.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Workflow.objects.filter(pk=wf.pk).exists()
    assert not PeriodicTask.objects.filter(name__startswith=f"workflow:{wf.pk}").exists()


def test_a_workflow_without_a_version_breaks_no_list(admin_client, api, user):
    make_workflow(user, [node("start")], name="fine")
    Workflow.objects.create(owner=user, name="bare")  # written behind the services' back
    response = api.get("/api/workflows/")
    assert response.status_code == 200
    by_name = {w["name"]: w for w in response.json()["results"]}
    assert by_name["bare"]["nodes"] == [] and by_name["fine"]["nodes"][0]["key"] == "start"
    assert admin_client.get("/admin/executions/workflow/").status_code == 200
    bare = Workflow.objects.get(name="bare")
    assert admin_client.get(change_url(bare)).status_code == 200


def test_run_button_starts_an_execution_with_the_typed_input(admin_client, user):
    wf = make_workflow(user, [node("start")], name="runnable")
    page = admin_client.get(change_url(wf)).content.decode()
    assert f'action="/admin/executions/workflow/{wf.pk}/run/"' in page
    run = f"/admin/executions/workflow/{wf.pk}/run/"
    response = admin_client.post(run, {"input": '{"order": 7}'})
    execution = Execution.objects.get(workflow=wf)
    assert response.status_code == 302
    assert response["Location"] == f"/admin/executions/execution/{execution.pk}/change/"
    assert execution.input == {"order": 7} and execution.trigger == "admin"
    # Bad input: a message naming the field, nothing started.
    response = admin_client.post(run, {"input": "[1, 2"}, follow=True)
    assert "Input: not valid JSON" in response.content.decode()
    response = admin_client.post(run, {"input": "[1, 2]"}, follow=True)
    assert "Input: must be a JSON object" in response.content.decode()
    assert Execution.objects.filter(workflow=wf).count() == 1


def test_backfill_box_starts_one_run_per_slot_once(admin_client, admin_user):
    wf = make_workflow(admin_user, [node("a")], schedule={"cron": "0 * * * *", "timezone": "UTC"})
    plain = make_workflow(admin_user, [node("a")], name="no schedule")
    assert 'id="wc-backfill-form"' in admin_client.get(change_url(wf)).content.decode()
    assert 'id="wc-backfill-form"' not in admin_client.get(change_url(plain)).content.decode()
    url = f"/admin/executions/workflow/{wf.id}/backfill/"
    span = {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T03:00:00Z"}

    admin_client.post(url, span)
    admin_client.post(url, span)  # idempotent per slot
    runs = Execution.objects.filter(workflow=wf, trigger="backfill")
    assert sorted(r.scheduled_for.hour for r in runs) == [0, 1, 2]

    page = admin_client.post(url, {"start": "2026-01-02T00:00:00Z", "end": "nope"}, follow=True)
    assert "end" in page.content.decode() and runs.count() == 3
