"""Which workflow version a retry runs: the one the execution ran, unless the caller asks for
the latest (API and admin); ``retry_of`` points at the original either way."""

from __future__ import annotations

import pytest

from executions.models import Execution
from tests.helpers import edge, node, wait_for, workflow_doc

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def two_nodes(b_fails: bool) -> dict:
    b = (
        node("b", "test_behave", config={"fail_attempts": 99, "retryable": False})
        if b_fails
        else node("b", "test_behave", config={"output": {"fixed": True}})
    )
    return workflow_doc(
        [node("a", "test_behave", config={"output": {"v": 1}}), b], [edge("a", "b")]
    )


@pytest.fixture
def failed_on_v1(api):
    """A workflow whose v1 fails at `b`, its failed execution, and a v2 that fixes `b`."""
    wf = api.post("/api/workflows/", two_nodes(b_fails=True), format="json").json()
    ex = api.post(f"/api/workflows/{wf['id']}/execute/", {}, format="json").json()
    failed = wait_for(ex["id"])
    assert failed.status == "failed" and failed.workflow_version == 1
    res = api.put(f"/api/workflows/{wf['id']}/", two_nodes(b_fails=False), format="json")
    assert res.status_code == 200 and res.json()["version"] == 2
    return failed


def retry(api, execution_id, body):
    return api.post(f"/api/executions/{execution_id}/retry/", body, format="json")


def test_retry_runs_the_version_it_started_on_by_default(worker, api, failed_on_v1):
    for body in ({}, {"version": "original"}):
        res = retry(api, failed_on_v1.id, body)
        assert res.status_code == 202, res.json()
        assert res.json()["workflow_version"] == 1
        again = wait_for(res.json()["id"])
        assert again.status == "failed" and again.workflow_version == 1
        assert again.snapshot_id == failed_on_v1.snapshot_id


def test_retry_on_the_latest_version(worker, api, failed_on_v1):
    res = retry(api, failed_on_v1.id, {"version": "latest"})
    assert res.status_code == 202, res.json()
    doc = res.json()
    assert doc["workflow_version"] == 2 and doc["retry_of"] == str(failed_on_v1.id)
    done = wait_for(doc["id"])
    assert done.status == "succeeded" and done.output == {"b": {"fixed": True}}
    runs = {r.node: r for r in done.node_runs.all()}
    # `a` is defined the same in v2: from_failed reuses its success; `b` changed and ran.
    assert runs["a"].attempts == 0 and runs["b"].attempts == 1
    shown = api.get(f"/api/executions/{doc['id']}/").json()
    assert shown["workflow_version"] == 2 and shown["retry_of"] == str(failed_on_v1.id)


def test_from_failed_on_the_latest_version_reruns_changed_nodes(worker, api, user):
    wf = api.post("/api/workflows/", two_nodes(b_fails=True), format="json").json()
    failed = wait_for(
        api.post(f"/api/workflows/{wf['id']}/execute/", {}, format="json").json()["id"]
    )
    changed = two_nodes(b_fails=False)
    changed["nodes"][0]["config"] = {"output": {"v": 2}}
    assert api.put(f"/api/workflows/{wf['id']}/", changed, format="json").status_code == 200
    done = wait_for(retry(api, failed.id, {"version": "latest"}).json()["id"])
    runs = {r.node: r for r in done.node_runs.all()}
    assert runs["a"].attempts == 1 and runs["a"].output == {"v": 2}
    assert runs["b"].input == {"v": 2}


def test_bad_version_is_400_naming_the_field(api, failed_on_v1):
    res = retry(api, failed_on_v1.id, {"version": 3})
    assert res.status_code == 400 and "version" in res.json()


def test_admin_retry_on_the_latest_version(admin_client, worker, api, failed_on_v1):
    res = admin_client.post(
        "/admin/executions/execution/",
        {"action": "retry_executions_latest", "_selected_action": [str(failed_on_v1.id)]},
    )
    assert res.status_code == 302
    new = Execution.objects.get(retry_of=failed_on_v1.id)
    assert new.workflow_version == 2 and wait_for(new.id).status == "succeeded"
