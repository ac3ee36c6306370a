"""http_request end to end: a real worker calling a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import pytest

from tests.support.nodes import serve_http
from tests.support.workflows import edge, make_workflow, node, run, runs_by_node

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


@pytest.fixture(scope="module")
def http_server():
    yield from serve_http()


FAST_RETRY = {
    "max_retries": 3,
    "backoff_seconds": 0.05,
    "max_backoff_seconds": 0.2,
    "jitter": False,
}


def http_node(key="call", retry=None, **config):
    extra = {"retry": retry} if retry else {}
    return node(key, "http_request", config=config, **extra)


def test_retries_503_then_succeeds(worker, user, http_server):
    wf = make_workflow(user, [http_node(url=f"{http_server.base}/flaky/a", retry=FAST_RETRY)])
    ex = run(wf)
    assert ex.status == "succeeded", ex.error
    call = runs_by_node(ex)["call"]
    assert call.attempts == 3
    assert call.output["statusCode"] == 200 and call.output["body"] == {"ok": True, "hit": 3}
    assert call.retry_delays == [0.05, 0.1]
    assert http_server.hits["/flaky/a"] == 3


def test_404_takes_error_branch_without_retry(worker, user, http_server):
    wf = make_workflow(
        user,
        [
            http_node(url=f"{http_server.base}/status/404", retry=FAST_RETRY),
            node("ok"),
            node("on_error"),
        ],
        [edge("call", "ok"), edge("call", "on_error", "error")],
    )
    ex = run(wf)
    assert ex.status == "succeeded", ex.error
    runs = runs_by_node(ex)
    assert runs["call"].status == "failed" and runs["call"].attempts == 1
    assert runs["ok"].status == "skipped"
    assert runs["on_error"].input["statusCode"] == 404
    assert runs["on_error"].input["body"] == {"code": 404}
    assert http_server.hits["/status/404"] == 1


@pytest.mark.parametrize("code", [503, 404])
def test_allowed_status_is_a_success_without_retry(worker, user, http_server, code):
    hits_before = http_server.hits.get(f"/status/{code}", 0)
    wf = make_workflow(
        user,
        [
            http_node(
                url=f"{http_server.base}/status/{code}", allowed_status=[code], retry=FAST_RETRY
            ),
            node("ok"),
            node("on_error"),
        ],
        [edge("call", "ok"), edge("call", "on_error", "error")],
    )
    ex = run(wf)
    assert ex.status == "succeeded", ex.error
    runs = runs_by_node(ex)
    assert runs["call"].status == "succeeded"
    assert runs["call"].attempts == 1 and runs["call"].retry_delays == []
    assert runs["ok"].input["statusCode"] == code
    assert runs["on_error"].status == "skipped"
    assert http_server.hits[f"/status/{code}"] == hits_before + 1


def test_slow_route_hits_the_timeout_and_fails(worker, user, http_server):
    wf = make_workflow(user, [http_node(url=f"{http_server.base}/slow/3", timeout=0.5)])
    ex = run(wf)
    assert ex.status == "failed"
    call = runs_by_node(ex)["call"]
    assert call.status == "failed" and call.attempts == 1
    assert call.error["type"] == "Timeout" and "timed out" in call.error["message"]


@pytest.mark.parametrize("form", ["1", "date"])
def test_retry_after_is_honoured(worker, user, http_server, form):
    path = f"/retry-after/{form}/{form}"
    retry = {**FAST_RETRY, "backoff_seconds": 0.01}
    wf = make_workflow(user, [http_node(url=f"{http_server.base}{path}", retry=retry)])
    ex = run(wf)
    assert ex.status == "succeeded", ex.error
    call = runs_by_node(ex)["call"]
    assert call.attempts == 2
    # The server's Retry-After (1 s, or an HTTP date ~2 s ahead at 1 s resolution), not the
    # 0.01 s backoff, decided the delay.
    assert len(call.retry_delays) == 1
    assert 0.5 <= call.retry_delays[0] <= 2.5, call.retry_delays


def test_json_text_and_request_building(worker, user, http_server):
    wf = make_workflow(
        user,
        [
            http_node(
                "post",
                method="POST",
                url=f"{http_server.base}/echo/{{{{ input.id }}}}",
                headers={"X-Test": "{{ execution_input.tag }}"},
                query={"page": "{{ input.id }}", "flag": True, "ids": [1, 2]},
                json={"id": "{{ input.id }}", "items": {"jmespath": "input.items[].sku"}},
            ),
            http_node(
                "form",
                method="PUT",
                url=f"{http_server.base}/echo",
                form={"a": "{{ input.id }}", "b": 2},
            ),
            http_node("text", url=f"{http_server.base}/text"),
            http_node("badjson", url=f"{http_server.base}/bad-json"),
            http_node("nanjson", url=f"{http_server.base}/nan-json"),
            http_node("nuljson", url=f"{http_server.base}/nul-json"),
            http_node("nultext", url=f"{http_server.base}/nul-text"),
        ],
    )
    ex = run(wf, {"id": 7, "tag": "t1", "items": [{"sku": "A"}, {"sku": "B"}]})
    assert ex.status == "succeeded", ex.error
    runs = runs_by_node(ex)
    body = runs["post"].output["body"]
    assert body["method"] == "POST"
    assert body["json"] == {"id": 7, "items": ["A", "B"]}  # one {{ }} keeps the number a number
    assert body["query"] == {"page": ["7"], "flag": ["true"], "ids": ["1", "2"]}
    assert body["x_test"] == "t1"
    assert runs["post"].output["headers"]["content-type"] == "application/json"
    form = runs["form"].output["body"]
    assert form["method"] == "PUT" and form["raw"] == "a=7&b=2"
    assert form["content_type"] == "application/x-www-form-urlencoded"
    assert runs["text"].output["body"] == "plain text, ünïcode"
    assert runs["badjson"].output["body"] == "{not json"
    # What PostgreSQL's jsonb cannot store never reaches it: NaN stays text, NUL becomes U+FFFD.
    assert runs["nanjson"].output["body"] == '{"a": NaN}'
    assert runs["nuljson"].output["body"] == {"a": "x\ufffdy"}
    assert runs["nultext"].output["body"] == "a\ufffdb"


def test_body_cap_fails_without_retry(worker, user, http_server):
    wf = make_workflow(
        user,
        [
            http_node(
                url=f"{http_server.base}/big/300000", max_response_bytes=100000, retry=FAST_RETRY
            ),
            http_node("small", url=f"{http_server.base}/big/50000", max_response_bytes=100000),
        ],
    )
    ex = run(wf)
    assert ex.status == "failed"
    runs = runs_by_node(ex)
    assert runs["call"].status == "failed" and runs["call"].attempts == 1
    assert runs["call"].error["type"] == "ResponseTooLarge"
    assert "max_response_bytes (100000)" in runs["call"].error["message"]
    assert runs["small"].status == "succeeded" and len(runs["small"].output["body"]) == 50000


def test_connection_refused_is_retryable(worker, user):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    retry = {
        "max_retries": 1,
        "backoff_seconds": 0.01,
        "max_backoff_seconds": 0.01,
        "jitter": False,
    }
    wf = make_workflow(user, [http_node(url=f"http://127.0.0.1:{port}/", retry=retry)])
    ex = run(wf)
    call = runs_by_node(ex)["call"]
    assert ex.status == "failed" and call.attempts == 2
    assert call.error["type"] == "ConnectionError"
