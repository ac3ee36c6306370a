"""Node outputs the database cannot store fail the node once, with a clear non-retryable
error, through the real worker: never a crashed task that recovery runs again (repeating the
node's side effects) until it ends as WorkerLost."""

from __future__ import annotations

import time

import pytest
from django.db import connection

from executions.services.executions import execution_create
from tests.support.nodes import serve_http
from tests.support.workflows import edge, make_workflow, node, runs_by_node, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


@pytest.fixture(scope="module")
def http_server():
    yield from serve_http()


def run(workflow):
    execution, _ = execution_create(workflow=workflow, input={})
    return wait_for(execution.id, timeout=60)


def test_remote_json_with_a_lone_surrogate_fails_once(worker, user, http_server):
    wf = make_workflow(
        user,
        [
            node(
                "call",
                "http_request",
                config={"url": f"{http_server.base}/surrogate-json"},
                retry={"max_retries": 0},
            ),
            node("on_error"),
        ],
        [edge("call", "on_error", "error")],
    )
    ex = run(wf)
    call = runs_by_node(ex)["call"]
    assert call.status == "failed" and call.attempts == 1 and call.reassignments == 0
    assert call.output["type"] == "InvalidOutput"
    assert "lone surrogate" in call.output["message"]
    assert "output.body.a" in call.output["message"]
    # The error route ran with the error document: the failure was an ordinary one.
    assert ex.status == "succeeded" and runs_by_node(ex)["on_error"].status == "succeeded"
    time.sleep(1)  # a crashed task would be redelivered and call again
    assert http_server.hits["/surrogate-json"] == 1


def test_template_producing_a_lone_surrogate_fails_once(worker, user):
    wf = make_workflow(
        user,
        [node("t", "transform", config={"fields": {"v": '{{ "x\\ud800" }}'}})],
    )
    ex = run(wf)
    t = runs_by_node(ex)["t"]
    assert ex.status == "failed" and t.status == "failed" and t.attempts == 1
    assert t.output["type"] == "InvalidOutput" and "output.v" in t.output["message"]
    assert ex.error["detail"]["type"] == "InvalidOutput"


@pytest.fixture
def refusing_database():
    """A real database error on the finish statement: PostgreSQL refuses to mark a run
    succeeded when its output carries the key `refuse_me`."""
    with connection.cursor() as cur:
        cur.execute(
            """
            CREATE FUNCTION wc_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              RAISE EXCEPTION 'test refusal of this output';
            END $$;
            CREATE TRIGGER wc_test_refuse BEFORE UPDATE ON executions_noderun
              FOR EACH ROW WHEN (NEW.status = 'succeeded' AND NEW.output ? 'refuse_me')
              EXECUTE FUNCTION wc_test_refuse();
            """
        )
    yield
    with connection.cursor() as cur:
        cur.execute(
            "DROP TRIGGER IF EXISTS wc_test_refuse ON executions_noderun;"
            "DROP FUNCTION IF EXISTS wc_test_refuse();"
        )


def test_a_database_error_recording_the_result_fails_the_node_once(worker, user, refusing_database):
    wf = make_workflow(
        user,
        [
            node("start"),
            node("refused", "test_behave", config={"output": {"refuse_me": True}}),
            node("after"),
        ],
        [edge("start", "refused"), edge("refused", "after")],
    )
    ex = run(wf)
    runs = runs_by_node(ex)
    refused = runs["refused"]
    assert ex.status == "failed"
    assert refused.status == "failed" and refused.attempts == 1 and refused.reassignments == 0
    assert refused.output["type"] == "ResultNotStored"
    assert "test refusal of this output" in refused.output["message"]
    assert runs["after"].status in ("skipped", "cancelled") and runs["after"].started_at is None
    assert ex.error["detail"]["type"] == "ResultNotStored"
