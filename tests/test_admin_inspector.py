"""The run inspector: failure summary with the root cause, node input/output/error (redacted),
not-reached nodes, the live fragment, and the cancel/retry buttons."""

from __future__ import annotations

import html as htmllib
import re

import pytest

from executions.credentials.services import credential_create
from executions.models import Execution
from executions.services.executions import execution_create
from tests.support.workflows import edge, make_workflow, node, wait_for

RETRY = {"max_retries": 2, "backoff_seconds": 0.05, "max_backoff_seconds": 1, "jitter": False}


def page(admin_client, execution) -> str:
    response = admin_client.get(f"/admin/executions/execution/{execution.id}/change/")
    assert response.status_code == 200
    return response.content.decode()


def summary(html: str) -> str:
    found = re.search(r'<div class="wc-summary[^"]*" id="wc-summary">(.*?)</div>', html, re.S)
    assert found, "no failure summary"
    return htmllib.unescape(re.sub(r"<[^>]+>", "", found.group(1)))


def node_row(html: str, key: str) -> str:
    found = re.search(rf'<details class="wc-node" id="node-{key}"(.*?)</details>', html, re.S)
    assert found, f"no row for {key}"
    return htmllib.unescape(found.group(1))


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_failed_run_summary_names_the_root_cause(admin_client, worker, user):
    wf = make_workflow(
        user,
        [
            node("start"),
            node("fetch", "test_behave", config={"fail_attempts": 9}, retry=RETRY),
            node("after"),
        ],
        [edge("start", "fetch"), edge("fetch", "after")],
    )
    execution = wait_for(execution_create(workflow=wf, input={"order": 42})[0].id)
    assert execution.status == "failed"
    html = page(admin_client, execution)
    text = summary(html)
    assert "Failed at node fetch (test_behave)" in text
    assert "planned failure on attempt 3" in text  # the node's own message...
    assert "no error connection" not in text  # ...not the execution's wrapper
    assert "Attempts: 3" in text and "waits between them: 50 ms, 100 ms" in text
    fetch = node_row(html, "fetch")
    assert '"order": 42' in fetch and "planned failure on attempt 3" in fetch
    assert 'data-status="failed"' in fetch
    # The node after the failure never ran: it reads "not reached", in the table and timeline.
    assert ">not reached</span>" in node_row(html, "after")
    assert "not reached</text>" in html
    # Rows in graph order, times with seconds, a Flower link per task.
    assert re.findall(r'<details class="wc-node" id="node-(\w+)"', html) == [
        "start",
        "fetch",
        "after",
    ]
    assert re.search(r'<span class="wc-time">\d\d:\d\d:\d\d</span>', html)
    assert "/task/" in node_row(html, "start")
    assert f"/tasks?search={execution.id}" in html


@pytest.mark.django_db
def test_error_output_summary_reads_the_output(admin_client, user):
    """A node that answered an error *output* (an HTTP 404): the summary says so."""
    from executions.admin.inspect import root_message

    kind, message = root_message(
        {"message": "node returned an error output", "type": "ErrorOutput"},
        {"statusCode": 404, "body": {"detail": "no such order"}},
    )
    assert kind == "HTTP 404" and message == 'status 404: {"detail": "no such order"}'
    assert root_message({"type": "ErrorOutput"}, {"error": True, "message": "quota"}) == (
        "ErrorOutput",
        "quota",
    )


@pytest.mark.django_db
def test_inputs_and_outputs_are_redacted(admin_client, user):
    credential_create(owner=user, name="api", kind="bearer", data={"token": "tok-SECRET-123"})
    wf = make_workflow(
        user,
        [node("call", "http_request", config={"url": "http://127.0.0.1:9/", "credential": "api"})],
    )
    # Not dispatched (the transaction of this test never commits): the run stays queued with
    # its input, which carries the secret twice.
    execution, _ = execution_create(
        workflow=wf,
        input={"password": "hunter2", "note": "uses tok-SECRET-123 inside", "keep": "visible"},
    )
    html = page(admin_client, execution)
    assert "tok-SECRET-123" not in html and "hunter2" not in html
    row = node_row(html, "call")
    assert '"password": "***"' in row and '"note": "uses *** inside"' in row
    assert '"keep": "visible"' in row


@pytest.mark.django_db
def test_live_fragment_and_bad_ids(admin_client, user):
    wf = make_workflow(user, [node("a"), node("b")], [edge("a", "b")])
    execution, _ = execution_create(workflow=wf, input={})
    response = admin_client.get(f"/admin/executions/execution/{execution.id}/live/")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "pending" and body["active"] is True
    assert 'id="node-a"' in body["html"] and "<svg" in body["html"]
    html = page(admin_client, execution)
    assert 'data-active="1"' in html and "inspector.js" in html
    assert admin_client.get("/admin/executions/execution/nope/live/").status_code == 404


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_buttons_cancel_and_retry(admin_client, worker, user):
    wf = make_workflow(
        user,
        [
            node("first"),
            node("boom", "test_behave", config={"fail_attempts": 1}, retry={"max_retries": 0}),
        ],
        [edge("first", "boom")],
    )
    failed = wait_for(execution_create(workflow=wf, input={"n": 1})[0].id)
    assert failed.status == "failed"
    html = page(admin_client, failed)
    assert 'id="wc-retry-failed"' in html and 'id="wc-cancel"' not in html
    url = f"/admin/executions/execution/{failed.id}/retry/"

    response = admin_client.post(url, {"mode": "from_failed"})
    retry = Execution.objects.get(retry_of=failed, trigger="retry")
    assert response["Location"] == f"/admin/executions/execution/{retry.id}/change/"
    retry = wait_for(retry.id)
    # from_failed copies the node that succeeded, and the second attempt of boom passes
    # (fail_attempts counts attempts of the new run).
    assert retry.node_runs.get(node="first").attempts == 0

    admin_client.post(url, {"mode": "new_input", "input": '{"n": 2}'})
    new = Execution.objects.filter(retry_of=failed).exclude(id=retry.id).get()
    assert new.input == {"n": 2}
    wait_for(new.id)

    response = admin_client.post(url, {"mode": "new_input", "input": "[1"}, follow=True)
    assert "Input: not valid JSON" in response.content.decode()
    assert Execution.objects.filter(retry_of=failed).count() == 2

    slow = make_workflow(user, [node("slow", "test_behave", config={"sleep": 3})], name="slow")
    running, _ = execution_create(workflow=slow, input={})
    wait_for(running.id, statuses={"running"})
    assert 'id="wc-cancel"' in page(admin_client, running)
    admin_client.post(f"/admin/executions/execution/{running.id}/cancel/")
    assert Execution.objects.get(id=running.id).status == "cancelled"


def test_a_waiting_node_says_what_it_waits_for_and_until_when():
    from datetime import timedelta

    from django.utils import timezone

    from executions.admin.inspect import fmt_duration, fmt_time, waiting_for
    from executions.models import NodeRun

    now = timezone.now()
    later = now + timedelta(seconds=30)

    def run(status, **fields):
        return NodeRun(node="n", node_type="noop", status=status, **fields)

    assert waiting_for(run("retrying", next_attempt_at=later), now) == (
        f"retry backoff until {fmt_time(later)}"
    )
    limited = run("retrying", next_attempt_at=later, error={"type": "HttpError", "statusCode": 429})
    assert waiting_for(limited, now).startswith("rate limit (Retry-After) until")
    delay = run("queued", next_attempt_at=later, state={"until": later.isoformat()})
    assert waiting_for(delay, now) == f"delay until {fmt_time(later)}"
    child = run("queued", next_attempt_at=later, state={"child": "1234567890abcdef"})
    assert waiting_for(child, now).startswith("event: sub-workflow 12345678 to finish")
    assert waiting_for(run("queued"), now) == "waiting for a worker"
    assert waiting_for(run("running"), now) == ""
    assert waiting_for(run("succeeded"), now) == ""
    assert [fmt_duration(x) for x in (0.0123, 1.5, 75, 7300)] == [
        "12 ms",
        "1.50 s",
        "1 min 15 s",
        "2 h 1 min",
    ]
