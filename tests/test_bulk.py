"""Bulk operations: retry or cancel every execution matching a filter as a background job,
through the API (with Idempotency-Key) and the admin's actions; tested on 300 failures."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from executions.models import BulkOperation, Execution, NodeRun, WorkflowVersion
from tests.support.workflows import edge, make_workflow, node, wait_all

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

URL = "/api/executions/bulk/"


def failed_executions(workflow, count: int, status: str = "failed") -> list[Execution]:
    """``count`` finished executions written directly (cheap): the first node succeeded, the
    second failed, as if each had run."""
    snapshot = WorkflowVersion.objects.get(workflow=workflow, version=workflow.version)
    now = timezone.now()
    executions = Execution.objects.bulk_create(
        Execution(
            workflow=workflow,
            snapshot=snapshot,
            workflow_version=snapshot.version,
            status=status,
            input={"i": i},
            error={"node": "second", "message": "node 'second' failed"},
            started_at=now,
            finished_at=now,
            deadline_at=now + timedelta(hours=1),
        )
        for i in range(count)
    )
    runs = []
    for e in executions:
        runs.append(
            NodeRun(
                execution=e,
                node="first",
                node_type="noop",
                status="succeeded",
                attempts=1,
                input=e.input,
                output=e.input,
                started_at=now,
                finished_at=now,
            )
        )
        runs.append(
            NodeRun(
                execution=e,
                node="second",
                node_type="noop",
                status="failed",
                attempts=1,
                input=e.input,
                error={"message": "boom", "type": "Error"},
                started_at=now,
                finished_at=now,
            )
        )
    NodeRun.objects.bulk_create(runs)
    return executions


def wait_job(job_id, timeout: float = 240) -> BulkOperation:
    deadline = time.monotonic() + timeout
    while True:
        job = BulkOperation.objects.get(id=job_id)
        if job.status == "finished":
            return job
        assert time.monotonic() < deadline, f"bulk job still {job.status}: {job.done}/{job.matched}"
        time.sleep(0.2)


def test_bulk_retry_of_300_failed_executions(api, worker, user):
    wf = make_workflow(user, [node("first"), node("second")], [edge("first", "second")])
    other = make_workflow(user, [node("only")], name="other")
    old = failed_executions(wf, 300)
    failed_executions(other, 5)  # another workflow: not matched
    payload = {"action": "retry", "filter": {"workflow": str(wf.id), "status": "failed"}}

    response = api.post(URL, payload, format="json", HTTP_IDEMPOTENCY_KEY="retry-all-1")
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["matched"] == 300 and body["action"] == "retry"
    # The same key starts nothing new, even while the first job runs.
    again = api.post(URL, payload, format="json", HTTP_IDEMPOTENCY_KEY="retry-all-1")
    assert again.status_code == 200 and again.json()["id"] == body["id"]

    job = wait_job(body["id"])
    progress = api.get(f"{URL}{body['id']}/").json()
    assert (progress["status"], progress["matched"], progress["done"], progress["failed"]) == (
        "finished",
        300,
        300,
        0,
    )
    assert job.started_at and job.finished_at
    assert BulkOperation.objects.count() == 1
    retries = Execution.objects.filter(retry_of__in=[e.id for e in old])
    assert retries.count() == 300
    # The retries run through the real worker: from the failed node, with the same input.
    finished = wait_all(retries.values_list("id", flat=True), timeout=300)
    assert {e.status for e in finished} == {"succeeded"}
    sample = retries.get(retry_of=old[7])
    assert sample.input == {"i": 7}
    assert sample.node_runs.get(node="first").attempts == 0  # copied, not run again
    # The job acted on the set fixed when it was created: no retry of a retry.
    assert not Execution.objects.filter(retry_of__in=retries.values("id")).exists()


def test_bulk_cancel_counts_refusals(api, worker, user):
    wf = make_workflow(user, [node("a")])
    pending = failed_executions(wf, 20, status="pending")
    finished = failed_executions(wf, 3, status="succeeded")
    response = api.post(
        URL,
        {"action": "cancel", "filter": {"workflow": str(wf.id)}},
        format="json",
    )
    assert response.status_code == 202
    job = wait_job(response.json()["id"])
    assert (job.matched, job.done, job.failed) == (23, 20, 3)
    assert len(job.errors) == 3 and "already succeeded" in job.errors[0]["error"]
    assert (
        Execution.objects.filter(id__in=[e.id for e in pending], status="cancelled").count() == 20
    )
    assert (
        Execution.objects.filter(id__in=[e.id for e in finished], status="succeeded").count() == 3
    )


def test_bulk_input_errors_name_the_field(api, other_api, user):
    cases = [
        ({"action": "delete", "filter": {}}, "action"),
        ({"action": "retry"}, "filter"),
        ({"action": "retry", "filter": {"status": "exploded"}}, "status"),
        ({"action": "retry", "filter": {"workflow": "nope"}}, "workflow"),
        ({"action": "retry", "filter": {"colour": "red"}}, "colour"),
        (
            {
                "action": "retry",
                "filter": {
                    "created_after": "2026-12-02T00:00:00Z",
                    "created_before": "2026-12-01T00:00:00Z",
                },
            },
            "created_before",
        ),
        ([1, 2], "non_field_errors"),
    ]
    for payload, field in cases:
        response = api.post(URL, payload, format="json")
        assert response.status_code == 400, (payload, response.json())
        assert field in str(response.json()), (payload, response.json())
    long_key = api.post(
        URL, {"action": "retry", "filter": {}}, format="json", HTTP_IDEMPOTENCY_KEY="k" * 256
    )
    assert long_key.status_code == 400 and "Idempotency-Key" in long_key.json()
    # Someone else's job is not found; an unknown id neither.
    job = api.post(URL, {"action": "cancel", "filter": {"status": "pending"}}, format="json")
    assert other_api.get(f"{URL}{job.json()['id']}/").status_code == 404
    assert api.get(f"{URL}00000000-0000-0000-0000-000000000000/").status_code == 404


def test_admin_bulk_action_for_a_selection(admin_client, worker, user):
    wf = make_workflow(user, [node("first"), node("second")], [edge("first", "second")])
    executions = failed_executions(wf, 4)
    response = admin_client.post(
        "/admin/executions/execution/",
        {"action": "bulk_retry", "_selected_action": [str(e.id) for e in executions[:3]]},
    )
    job = BulkOperation.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/admin/executions/bulkoperation/{job.id}/change/"
    job = wait_job(job.id)
    assert (job.action, job.matched, job.done) == ("retry", 3, 3)
    assert Execution.objects.filter(retry_of=executions[3]).count() == 0
    page = admin_client.get(f"/admin/executions/bulkoperation/{job.id}/change/")
    assert page.status_code == 200 and "finished" in page.content.decode()
