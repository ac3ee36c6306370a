"""DELETE /api/workflows/{id}/: refused with 409 naming the active executions unless
?cancel_active=true, and finished executions stay readable after the workflow is gone."""

from __future__ import annotations

import pytest

from executions.models import Execution, Workflow, WorkflowVersion
from executions.services.executions import execution_create
from executions.services.workflows import workflow_replace
from tests.support.workflows import make_workflow, node, workflow_doc

pytestmark = [pytest.mark.django_db(transaction=True)]

# A node that parks its run for an hour: the execution stays active whether or not a worker
# of the test session is running.
WAITING = node("a", "delay", config={"seconds": 3600})


def _finished(wf, status="succeeded") -> Execution:
    ex, _ = execution_create(workflow=wf, input={"n": 1})
    Execution.objects.filter(pk=ex.pk).update(status=status, output={"a": {"n": 1}})
    ex.node_runs.update(status="succeeded", output={"n": 1})
    return ex


def test_active_executions_make_delete_409(api, user):
    wf = make_workflow(user, [WAITING], name="Order sync")
    active, _ = execution_create(workflow=wf, input={})
    res = api.delete(f"/api/workflows/{wf.pk}/")
    assert res.status_code == 409, res.content
    body = res.json()
    assert "'Order sync' has 1 active execution(s)" in body["detail"]
    assert "cancel_active=true" in body["detail"]
    assert [e["id"] for e in body["active_executions"]] == [str(active.pk)]
    assert body["active_executions"][0]["status"] in ("pending", "running")
    assert body["count"] == 1
    assert Workflow.objects.filter(pk=wf.pk).exists()
    assert Execution.objects.get(pk=active.pk).status in ("pending", "running")


def test_cancel_active_cancels_then_deletes(api, user):
    wf = make_workflow(user, [WAITING], name="Order sync")
    active, _ = execution_create(workflow=wf, input={})
    res = api.delete(f"/api/workflows/{wf.pk}/?cancel_active=true")
    assert res.status_code == 204, res.content
    assert not Workflow.objects.filter(pk=wf.pk).exists()
    doc = api.get(f"/api/executions/{active.pk}/").json()
    assert doc["status"] == "cancelled" and doc["workflow"] is None
    assert doc["workflow_name"] == "Order sync"
    assert doc["error"]["message"] == "cancelled: its workflow was deleted"


def test_bad_cancel_active_is_400(api, user):
    wf = make_workflow(user, [node("a")])
    res = api.delete(f"/api/workflows/{wf.pk}/?cancel_active=perhaps")
    assert res.status_code == 400 and "cancel_active" in res.json()
    assert Workflow.objects.filter(pk=wf.pk).exists()


def test_finished_history_outlives_the_workflow(api, other_api, user):
    wf = make_workflow(user, [node("a")], name="Nightly")
    first = _finished(wf)
    # A second version nobody ran, and a third that ran: only the ones that ran are kept.
    workflow_replace(workflow=wf, data=workflow_doc([node("a"), node("b")], name="Nightly"))
    workflow_replace(workflow=wf, data=workflow_doc([node("c")], name="Nightly"))
    wf.refresh_from_db()
    second = _finished(wf, status="failed")
    assert api.delete(f"/api/workflows/{wf.pk}/").status_code == 204

    for ex, version in ((first, 1), (second, 3)):
        doc = api.get(f"/api/executions/{ex.pk}/").json()
        assert doc["workflow"] is None and doc["workflow_name"] == "Nightly"
        assert doc["workflow_version"] == version and doc["input"] == {"n": 1}
        assert doc["node_runs"] and doc["node_runs"][0]["output"] == {"n": 1}
    listed = api.get("/api/executions/").json()["results"]
    assert {e["id"] for e in listed} == {str(first.pk), str(second.pk)}
    assert {e["workflow_name"] for e in listed} == {"Nightly"}
    # The snapshots they ran are kept; the unused version 2 is gone.
    kept = WorkflowVersion.objects.filter(executions__isnull=False).distinct()
    assert sorted(v.version for v in kept) == [1, 3]
    assert sorted(WorkflowVersion.objects.values_list("version", flat=True)) == [1, 3]
    # Still the owner's alone.
    assert other_api.get(f"/api/executions/{first.pk}/").status_code == 404
    assert other_api.get("/api/executions/").json()["count"] == 0
    # It cannot run again.
    res = api.post(f"/api/executions/{first.pk}/retry/", {}, format="json")
    assert res.status_code == 409 and "'Nightly' was deleted" in res.json()["detail"]


def test_admin_offers_no_delete_while_executions_are_active(admin_client, user):
    wf = make_workflow(user, [WAITING])
    execution_create(workflow=wf, input={})
    page = admin_client.get(f"/admin/executions/workflow/{wf.pk}/delete/")
    assert page.status_code == 403
    Execution.objects.filter(workflow=wf).update(status="cancelled")
    res = admin_client.post(f"/admin/executions/workflow/{wf.pk}/delete/", {"post": "yes"})
    assert res.status_code == 302
    assert not Workflow.objects.filter(pk=wf.pk).exists()
    assert Execution.objects.get().workflow_name == "test workflow"
    assert Execution.objects.get().workflow is None
