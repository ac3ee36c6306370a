"""Credentials and egress in real runs: http_request applies each credential kind against a
real local server, and nothing a run stores, logs or answers carries a secret."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from executions.credentials.services import credential_create
from executions.services.executions import execution_create
from tests.support.workflows import edge, make_workflow, node, run, runs_by_node, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

NO_RETRY = {"max_retries": 0}


def stored_text(execution) -> str:
    """Everything stored for an execution and its node runs, as one string."""
    parts = [execution.input, execution.output, execution.error]
    for r in execution.node_runs.all():
        parts += [r.input, r.output, r.error, r.state]
    return json.dumps(parts)


@pytest.fixture
def secrets(user) -> dict[str, str]:
    tag = uuid.uuid4().hex[:10]
    values = {
        "token": f"bt-{tag}-tok",
        "username": f"svc-{tag}",
        "password": f"pw {tag}/+&=",
        "header": f"hv-{tag}-key",
        "api_key": f"gk-{tag}-api",
        "signing": f"gs-{tag}/sig+x",
    }
    credential_create(owner=user, name="bt", kind="bearer", data={"token": values["token"]})
    credential_create(
        owner=user,
        name="ba",
        kind="basic",
        data={"username": values["username"], "password": values["password"]},
    )
    credential_create(
        owner=user,
        name="hd",
        kind="header",
        data={"header_name": "X-Api-Key", "value": values["header"]},
    )
    credential_create(
        owner=user,
        name="gn",
        kind="generic",
        data={"api_key": values["api_key"], "signing": values["signing"], "region": "eu-west-1"},
    )
    return values


def test_server_accepts_each_kind_and_refuses_without_it(worker, user, http_server, secrets):
    basic = base64.b64encode(f"{secrets['username']}:{secrets['password']}".encode()).decode()
    http_server.required.update(
        {
            "bearer": ("Authorization", f"Bearer {secrets['token']}"),
            "basic": ("Authorization", f"Basic {basic}"),
            "header": ("X-Api-Key", secrets["header"]),
            "generic": ("X-Key", secrets["api_key"]),
        }
    )
    calls = {
        "bearer": {"credential": "bt"},
        "basic": {"credential": "ba"},
        "header": {"credential": "hd"},
        "generic": {"headers": {"X-Key": "{{ credentials.gn.api_key }}"}},
    }
    nodes = [
        node(kind, "http_request", config={"url": http_server.url(f"/need/{kind}"), **extra})
        for kind, extra in calls.items()
    ]
    # The control: the same server refuses a request that carries no credential (401, an
    # error output, taken by the error connection).
    nodes += [
        node("without", "http_request", config={"url": http_server.url("/need/bearer")}),
        node("refused", "noop"),
    ]
    ex = run(make_workflow(user, nodes, [edge("without", "refused", "error")]))
    assert ex.status == "succeeded", ex.error
    runs = runs_by_node(ex)
    for kind in calls:
        assert runs[kind].status == "succeeded" and runs[kind].output["statusCode"] == 200, kind
    assert runs["without"].status == "failed" and runs["without"].output["statusCode"] == 401
    assert runs["refused"].status == "succeeded"


def test_each_kind_applied_and_redacted_everywhere(worker, user, api, http_server, secrets):
    echo = http_server.url("/echo")
    wf = make_workflow(
        user,
        [
            node("bearer", "http_request", config={"url": echo, "credential": "bt"}),
            node("basic", "http_request", config={"url": echo, "credential": "ba"}),
            node(
                "header",
                "http_request",
                config={"url": echo, "credential": "hd", "headers": {"X-Api-Key": "overridden"}},
            ),
            node(
                "generic",
                "http_request",
                config={
                    "url": echo,
                    "method": "POST",
                    "headers": {
                        "X-Key": "{{ credentials.gn.api_key }}",
                        "X-Region": "{{ credentials.gn.region }}",
                    },
                    "query": {"sig": "{{ credentials.gn.signing }}"},
                    "json": {"key": "{{ credentials['gn'].api_key }}"},
                },
            ),
            node(
                "text",
                "http_request",
                config={"url": http_server.url("/echo-text"), "credential": "bt"},
            ),
            node("after", "noop"),
            node(
                "failing",
                "http_request",
                retry=NO_RETRY,
                config={
                    "url": http_server.url("/echo-500")
                    + "?sig={{ credentials.gn.signing | urlencode }}",
                    "credential": "bt",
                },
            ),
            node("handler", "noop"),
        ],
        [edge("bearer", "after"), edge("failing", "handler", "error")],
    )
    ex = run(wf)
    assert ex.status == "succeeded", (
        ex.error,
        {k: (r.status, r.error) for k, r in runs_by_node(ex).items()},
    )

    # What the server received: each credential applied the way its kind says.
    by_path: dict[str, list[dict]] = {}
    for req in http_server.requests:
        by_path.setdefault(req["path"], []).append(req)
    echo_headers = [r["headers"] for r in by_path["/echo"]]
    assert {"authorization": f"Bearer {secrets['token']}"}.items() <= next(
        h for h in echo_headers if h.get("authorization", "").startswith("Bearer")
    ).items()
    basic = base64.b64encode(f"{secrets['username']}:{secrets['password']}".encode()).decode()
    assert any(h.get("authorization") == f"Basic {basic}" for h in echo_headers)
    assert any(
        h.get("x-api-key") == secrets["header"] for h in echo_headers
    )  # credential beats config
    generic = next(r for r in by_path["/echo"] if r["method"] == "POST")
    assert generic["headers"]["x-key"] == secrets["api_key"]
    assert generic["headers"]["x-region"] == "eu-west-1"
    assert generic["query"] == {"sig": secrets["signing"]}
    assert json.loads(generic["body"]) == {"key": secrets["api_key"]}
    assert by_path["/echo-500"][0]["headers"]["authorization"] == f"Bearer {secrets['token']}"
    assert by_path["/echo-500"][0]["query"] == {"sig": secrets["signing"]}

    # What was stored: the echoes came back, but with every secret replaced.
    runs = runs_by_node(ex)
    text = stored_text(ex)
    for value in (*secrets.values(), basic):
        assert value not in text, value
    assert runs["bearer"].output["body"]["headers"]["authorization"] == "Bearer ***"
    assert runs["basic"].output["body"]["headers"]["authorization"] == "Basic ***"
    assert runs["header"].output["body"]["headers"]["x-api-key"] == "***"
    assert runs["generic"].output["body"]["query"] == {"sig": "***"}
    assert runs["generic"].output["body"]["headers"]["x-region"] == "***"  # every generic value
    assert "authorization: Bearer ***" in runs["text"].output["body"]
    assert runs["after"].input["body"]["headers"]["authorization"] == "Bearer ***"
    assert runs["failing"].status == "failed" and runs["failing"].attempts == 1
    assert "sig=***" in runs["failing"].error["message"]
    assert runs["handler"].input["body"]["headers"]["authorization"] == "Bearer ***"

    # What the API answers.
    body = api.get(f"/api/executions/{ex.id}/").content.decode()
    assert "Bearer ***" in body
    for value in (*secrets.values(), basic):
        assert value not in body

    # What the worker logged (the failure line quotes the URL that carried a secret).
    log = worker.log.read_text(errors="replace")
    assert "sig=***" in log
    for value in (*secrets.values(), basic):
        assert value not in log


def test_missing_or_foreign_credential_fails_the_node_without_retry(
    worker, user, other_user, http_server
):
    credential_create(owner=other_user, name="theirs", kind="bearer", data={"token": "t-other"})
    retry = {"max_retries": 3, "backoff_seconds": 0}
    # make_workflow validates without an owner (as a document); the run checks the owner.
    configs = {
        "absent": {"url": http_server.url("/echo"), "credential": "absent"},
        "theirs": {
            "url": http_server.url("/echo"),
            "headers": {"X": "{{ credentials.theirs.token }}"},
        },
    }
    started = {
        name: execution_create(
            workflow=make_workflow(
                user, [node("call", "http_request", retry=retry, config=config)]
            ),
            input={},
        )[0]
        for name, config in configs.items()
    }
    for name, execution in started.items():
        ex = wait_for(execution.id, 60)
        assert ex.status == "failed"
        r = runs_by_node(ex)["call"]
        assert r.status == "failed" and r.attempts == 1 and r.retry_delays == [], (
            name,
            r.status,
            r.attempts,
        )
        assert r.error["type"] == "CredentialNotFound"
        assert f"credential {name!r} does not exist" in r.error["message"]
    assert http_server.requests == []


def test_egress_refusals_fail_the_node_without_retry(worker, user, http_server):
    retry = {"max_retries": 3, "backoff_seconds": 0}
    wf = make_workflow(
        user,
        [
            node(
                "metadata",
                "http_request",
                retry=retry,
                config={"url": "http://169.254.169.254/latest/meta-data/"},
            ),
            node(
                "redirected",
                "http_request",
                retry=retry,
                config={"url": http_server.url("/redirect?to=http://169.254.169.254/latest/")},
            ),
            node("handle_a", "noop"),
            node("handle_b", "noop"),
        ],
        [edge("metadata", "handle_a", "error"), edge("redirected", "handle_b", "error")],
    )
    ex = run(wf)
    assert ex.status == "succeeded", ex.error
    runs = runs_by_node(ex)
    for key in ("metadata", "redirected"):
        r = runs[key]
        assert r.status == "failed" and r.attempts == 1 and r.retry_delays == []
        assert r.error["type"] == "EgressDenied"
        assert "169.254.0.0/16" in r.error["message"] and "169.254.0.0/16" in r.error["rule"]
    assert http_server.paths() == ["/redirect"]  # the first hop was allowed


def test_sub_workflow_input_built_from_a_credential_is_redacted(worker, user, secrets):
    from executions.models import Execution

    child = make_workflow(user, [node("echo", "noop")], name="child")
    parent = make_workflow(
        user,
        [
            node(
                "call",
                "sub_workflow",
                config={
                    "workflow": str(child.id),
                    "input": {"auth": "Bearer {{ credentials.bt.token }}"},
                },
            )
        ],
    )
    ex = run(parent)
    assert ex.status == "succeeded", ex.error
    child_ex = Execution.objects.get(workflow=child)
    assert child_ex.input == {"auth": "Bearer ***"}
    assert ex.output == {"call": {"echo": {"auth": "Bearer ***"}}}
    assert secrets["token"] not in stored_text(ex) + stored_text(child_ex)
