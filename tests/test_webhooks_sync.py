"""Synchronous webhooks (``webhook_respond: on_completion``): the request waits for the
execution and answers with its result, the respond node's status/headers/body, the error, or
202 with a status URL when the wait runs out; and 50 concurrent callers through gunicorn as
the Procfile runs it."""

from __future__ import annotations

import json
import os
import shlex
import statistics
import threading
import time

import httpx
import pytest
from rest_framework.test import APIClient

from executions.models import Execution
from tests.helpers import edge, node, wait_all, wait_for, workflow_doc
from tests.support.gunicorn import WebProcess, procfile_command

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

THREE = [node("a"), node("b"), node("c", "test_behave", config={"output": {"done": True}})]
THREE_EDGES = [edge("a", "b"), edge("b", "c")]


def hooked(api, nodes, connections=None, **extra):
    extra.setdefault("webhook_respond", "on_completion")
    doc = workflow_doc(nodes, connections, webhook_enabled=True, **extra)
    res = api.post("/api/workflows/", doc, format="json")
    assert res.status_code == 201, res.json()
    wf = res.json()
    token = api.post(f"/api/workflows/{wf['id']}/webhook-token/").json()["webhook_token"]
    return wf, token


def hook(wf, token, body=None):
    return APIClient().post(
        f"/api/hooks/{wf['id']}/", body or {}, format="json", HTTP_X_WECONNECT_TOKEN=token
    )


def test_answers_200_with_the_output(worker, api):
    wf, token = hooked(api, THREE, THREE_EDGES)
    assert wf["webhook_respond"] == "on_completion"
    assert wf["webhook_respond_timeout_seconds"] == 10 and wf["webhook_respond_node"] is None
    res = hook(wf, token, {"order": 1})
    assert res.status_code == 200, res.content
    assert res.json() == {"c": {"done": True}}
    assert Execution.objects.get().status == "succeeded"


def test_the_finish_notification_wakes_the_wait(worker, api, settings):
    # With a poll as long as the wait, only the notification can end the wait early: without
    # it the request would sleep the whole 30 s before looking again.
    settings.WECONNECT_WEBHOOK_POLL_SECONDS = 30
    wf, token = hooked(api, THREE, THREE_EDGES, webhook_respond_timeout_seconds=30)
    started = time.monotonic()
    res = hook(wf, token)
    assert res.status_code == 200 and res.json() == {"c": {"done": True}}
    assert time.monotonic() - started < 20  # a 3-node run, even on a loaded machine


def test_debounced_webhook_callers_share_one_execution(worker, api):
    wf, token = hooked(
        api,
        [node("a", "test_behave")],
        webhook_respond="immediately",
        debounce={"key": "{{ input.order }}", "seconds": 2},
    )
    first, second = hook(wf, token, {"order": 1, "v": 1}), hook(wf, token, {"order": 1, "v": 2})
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"] and second.json()["debounced"] == "joined"
    assert wait_for(first.json()["id"]).input == {"order": 1, "v": 2}


def test_respond_node_sets_status_headers_and_body(worker, api):
    answer = {"statusCode": 201, "headers": {"X-Order": "42"}, "body": {"created": 42}}
    wf, token = hooked(
        api,
        [node("reply", "test_behave", config={"output": answer}), node("after")],
        [edge("reply", "after")],
        webhook_respond_node="reply",
    )
    res = hook(wf, token)
    assert res.status_code == 201, res.content
    assert res["X-Order"] == "42" and res.json() == {"created": 42}


def test_respond_node_output_without_status_is_the_body(worker, api):
    wf, token = hooked(
        api,
        [node("a", "test_behave", config={"output": {"x": 1}}), node("b")],
        [edge("a", "b")],
        webhook_respond_node="a",
    )
    res = hook(wf, token)
    assert res.status_code == 200 and res.json() == {"x": 1}


def test_text_body_and_a_deliberate_404(worker, api):
    answer = {"statusCode": 404, "headers": {"Content-Type": "text/plain"}, "body": "no such order"}
    wf, token = hooked(
        api, [node("reply", "test_behave", config={"output": answer})], webhook_respond_node="reply"
    )
    res = hook(wf, token)
    # A statusCode >= 400 fails the node (error convention) and the execution: the node's
    # answer is still the one sent.
    assert res.status_code == 404 and res.content == b"no such order"
    assert res["Content-Type"] == "text/plain"
    assert Execution.objects.get().status == "failed"


def test_failed_execution_answers_500_with_the_error(worker, api):
    wf, token = hooked(
        api, [node("boom", "test_behave", config={"fail_attempts": 9, "retryable": False})]
    )
    res = hook(wf, token)
    assert res.status_code == 500, res.content
    body = res.json()
    assert body["status"] == "failed" and body["error"]["node"] == "boom"


def test_not_finished_in_time_is_202_with_a_status_url(worker, api):
    wf, token = hooked(
        api,
        [node("slow", "test_behave", config={"sleep": 3, "output": {"late": True}})],
        webhook_respond_timeout_seconds=1,
    )
    started = time.monotonic()
    res = hook(wf, token)
    assert res.status_code == 202, res.content
    assert time.monotonic() - started < 10
    body = res.json()
    assert body["status"] in ("pending", "running")
    url = body["status_url"]
    assert url.endswith(f"/api/hooks/{wf['id']}/executions/{body['id']}/")
    assert res["Location"] == url
    client = APIClient()
    assert client.get(url).status_code == 404  # the token is needed
    assert client.get(url, HTTP_X_WECONNECT_TOKEN="wrong").status_code == 404
    wait_for(body["id"])
    done = client.get(url, HTTP_X_WECONNECT_TOKEN=token)
    assert done.status_code == 200 and done.json() == {"slow": {"late": True}}


def test_immediately_is_still_202(worker, api):
    wf, token = hooked(api, THREE, THREE_EDGES, webhook_respond="immediately")
    res = hook(wf, token)
    assert res.status_code == 202 and res.json()["created"] is True


@pytest.mark.parametrize(
    ("extra", "field", "reason"),
    [
        ({"webhook_respond_timeout_seconds": 31}, "webhook_respond_timeout_seconds", "less than"),
        ({"webhook_respond_timeout_seconds": 0}, "webhook_respond_timeout_seconds", "greater"),
        ({"webhook_respond": "eventually"}, "webhook_respond", "not a valid choice"),
        ({"webhook_respond_node": "nope"}, "webhook_respond_node", "not a node"),
    ],
)
def test_bad_settings_are_400_naming_the_field(api, extra, field, reason):
    res = api.post("/api/workflows/", workflow_doc([node("a")], **extra), format="json")
    assert res.status_code == 400
    assert any(reason in e for e in res.json()[field]), res.json()


# --- 50 concurrent callers through gunicorn -------------------------------------------------


@pytest.fixture
def web():
    server = WebProcess()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def fifty_callers(url: str, token: str) -> list[tuple[int, object, float, float]]:
    """50 callers released at once; (status, body, start, end) of each."""
    callers = 50
    results: list = [None] * callers
    gate = threading.Barrier(callers)

    def call(i: int) -> None:
        with httpx.Client(timeout=60) as client:
            gate.wait()
            started = time.monotonic()
            res = client.post(url, json={"caller": i}, headers={"X-WeConnect-Token": token})
            results[i] = (res.status_code, res.json(), started, time.monotonic())

    threads = [threading.Thread(target=call, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def test_fifty_concurrent_callers_through_gunicorn(worker, api, web):
    assert "gunicorn" in shlex.split(procfile_command("web"))
    wf, token = hooked(api, THREE, THREE_EDGES, webhook_respond_timeout_seconds=30)
    results = fifty_callers(web.url(f"/api/hooks/{wf['id']}/"), token)
    callers = len(results)
    codes = [r[0] for r in results if r]
    assert codes == [200] * callers, [r[:2] for r in results if r and r[0] != 200][:5]
    assert all(r[1] == {"c": {"done": True}} for r in results)
    assert Execution.objects.filter(workflow_id=wf["id"], status="succeeded").count() == callers
    latencies = sorted(r[3] - r[2] for r in results)
    figures = {
        "callers": callers,
        "web": f"{os.environ.get('WEB_CONCURRENCY', 2)}x{os.environ.get('WEB_THREADS', 4)}",
        "total_s": round(max(r[3] for r in results) - min(r[2] for r in results), 2),
        "median_s": round(statistics.median(latencies), 2),
        "p95_s": round(latencies[int(0.95 * callers) - 1], 2),
        "max_s": round(latencies[-1], 2),
    }
    # The same 50 executions triggered with 202 answers, until the last one has finished:
    # what waiting for the results adds to the work itself.
    plain, plain_token = hooked(api, THREE, THREE_EDGES, webhook_respond="immediately")
    started = time.monotonic()
    answers = fifty_callers(web.url(f"/api/hooks/{plain['id']}/"), plain_token)
    assert [a[0] for a in answers] == [202] * callers
    wait_all([a[1]["id"] for a in answers])
    figures["same_work_with_202_s"] = round(time.monotonic() - started, 2)
    print("synchronous webhook, 50 concurrent callers:", json.dumps(figures))
