"""Node types that wait without holding a worker: delay and sub_workflow; and python."""

from __future__ import annotations

import os
import time

import pytest

from executions.models import Execution
from executions.services.executions import execution_create
from executions.services.workflows import workflow_replace
from tests.support.nodes import PYTHON_NODES
from tests.support.workflows import (
    edge,
    make_workflow,
    node,
    run,
    runs_by_node,
    wait_all,
    workflow_doc,
)

# The worker process reads its allow-list from the environment when it starts (after
# collection, so this is in place); the test process gets it through the settings fixture.
os.environ.setdefault("WECONNECT_PYTHON_NODES", PYTHON_NODES)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


@pytest.fixture
def python_nodes(settings):
    settings.WECONNECT_PYTHON_NODES = PYTHON_NODES.split(",")


# --- delay -------------------------------------------------------------------------------------


def test_delays_overlap_instead_of_holding_workers(worker, user):
    # 8 executions each waiting 4 s on a worker of 4 processes: if a delay held a process the
    # waits would run in two rounds (>= 8 s); parked runs let all 8 wait at once. (4 s, not
    # less: a loaded machine and RabbitMQ's whole-second countdowns stay well inside the gap.)
    wf = make_workflow(
        user, [node("wait", "delay", config={"seconds": 4}), node("after")], [edge("wait", "after")]
    )
    started = time.monotonic()
    ids = [execution_create(workflow=wf, input={"i": i})[0].id for i in range(8)]
    done = wait_all(ids, timeout=30)
    elapsed = time.monotonic() - started
    assert all(e.status == "succeeded" for e in done), [(e.id, e.status, e.error) for e in done]
    assert 4.0 <= elapsed < 7.5, elapsed
    for e in done:
        runs = runs_by_node(e)
        assert runs["wait"].attempts == 1  # the wait is not an attempt
        assert runs["after"].input == e.input
        assert (runs["wait"].finished_at - e.created_at).total_seconds() >= 4.0


def test_delay_until_a_time_from_the_input(worker, user):
    from datetime import UTC, datetime, timedelta

    wf = make_workflow(user, [node("wait", "delay", config={"until": "{{ input.at }}"})])
    at = datetime.now(UTC) + timedelta(seconds=1.5)
    ex = run(wf, {"at": at.isoformat()})
    assert ex.status == "succeeded"
    wait = runs_by_node(ex)["wait"]
    assert wait.finished_at >= at and wait.state == {"until": at.isoformat()}


# --- python ------------------------------------------------------------------------------------


def test_python_calls_an_allowed_function(worker, user, python_nodes):
    wf = make_workflow(
        user,
        [
            node(
                "double",
                "python",
                config={"function": "tests.support.nodes.double", "pass": "input"},
            ),
            node("ctx", "python", config={"function": "tests.support.nodes.describe_context"}),
        ],
        [edge("double", "ctx")],
    )
    ex = run(wf, {"n": 21})
    assert ex.status == "succeeded", ex.error
    assert runs_by_node(ex)["double"].output == {"n": 42}
    assert runs_by_node(ex)["ctx"].output == {
        "attempt": 1,
        "node": "ctx",
        "input": {"n": 42},
        "depth": 0,
    }


def test_python_function_not_in_the_allow_list_is_a_400_at_save(api, python_nodes):
    doc = workflow_doc([node("p", "python", config={"function": "os.system"})])
    res = api.post("/api/workflows/", doc, format="json")
    assert res.status_code == 400
    assert "'os.system' is not in WECONNECT_PYTHON_NODES" in str(res.json())
    ok = workflow_doc([node("p", "python", config={"function": "tests.support.nodes.double"})])
    assert api.post("/api/workflows/", ok, format="json").status_code == 201


# --- sub_workflow --------------------------------------------------------------------------------


def test_sub_workflow_outputs_the_child_output(worker, user):
    child = make_workflow(
        user,
        [node("calc", "transform", config={"fields": {"doubled": "{{ input.n * 2 }}"}})],
        name="child",
    )
    parent = make_workflow(
        user,
        [
            node(
                "call",
                "sub_workflow",
                config={"workflow": str(child.id), "input": {"n": "{{ input.value }}"}},
            ),
            node("after"),
        ],
        [edge("call", "after")],
        name="parent",
    )
    ex = run(parent, {"value": 4})
    assert ex.status == "succeeded", ex.error
    call = runs_by_node(ex)["call"]
    assert call.output == {"calc": {"doubled": 8}}
    assert call.attempts == 1
    kid = Execution.objects.get(parent_node_run_id=call.id)
    assert kid.workflow_id == child.id and kid.trigger == "sub_workflow" and kid.depth == 1
    assert kid.input == {"n": 4} and kid.status == "succeeded"
    assert call.state == {"child": str(kid.id)}
    # The parent did not wait for its poll: the child's completion woke it.
    assert (call.finished_at - kid.finished_at).total_seconds() < 5


def test_sub_workflow_child_failure_fails_the_parent_node(worker, user):
    child = make_workflow(
        user, [node("boom", "stop_and_error", config={"message": "child says no"})], name="child"
    )
    retry = {"max_retries": 3, "backoff_seconds": 0.05, "max_backoff_seconds": 0.1, "jitter": False}
    parent = make_workflow(
        user,
        [
            node("call", "sub_workflow", retry=retry, config={"workflow": str(child.id)}),
            node("handler"),
        ],
        [edge("call", "handler", "error")],
    )
    ex = run(parent, {"x": 1})
    assert ex.status == "succeeded"
    call = runs_by_node(ex)["call"]
    assert call.status == "failed" and call.attempts == 1
    kid = Execution.objects.get(parent_node_run_id=call.id)
    assert kid.status == "failed" and kid.input == {"x": 1}  # no input config: the node's input
    assert call.error["type"] == "SubWorkflowFailed"
    assert str(kid.id) in call.error["message"] and "failed" in call.error["message"]
    assert Execution.objects.filter(workflow=child).count() == 1  # not started again


def test_sub_workflow_of_another_owner_is_refused(worker, user, other_user):
    theirs = make_workflow(other_user, [node("a")])
    mine = make_workflow(user, [node("call", "sub_workflow", config={"workflow": str(theirs.id)})])
    ex = run(mine)
    assert ex.status == "failed"
    assert runs_by_node(ex)["call"].error["type"] == "SubWorkflowNotFound"
    assert not Execution.objects.filter(workflow=theirs).exists()


def test_self_calling_workflow_stops_at_the_depth_limit(worker, user, settings):
    limit = settings.WECONNECT_MAX_SUBWORKFLOW_DEPTH
    wf = make_workflow(user, [node("a")], name="recursive")
    from executions.api.serializers import WorkflowInputSerializer

    doc = workflow_doc(
        [node("self", "sub_workflow", config={"workflow": str(wf.id)})], name="recursive"
    )
    serializer = WorkflowInputSerializer(data=doc)
    serializer.is_valid(raise_exception=True)
    workflow_replace(workflow=wf, data=serializer.validated_data)
    wf.refresh_from_db()

    ex = run(wf, {}, timeout=90)
    assert ex.status == "failed"
    chain = list(Execution.objects.filter(workflow=wf).order_by("depth"))
    assert [e.depth for e in chain] == list(range(limit + 1))
    assert all(e.status == "failed" for e in chain)
    deepest = runs_by_node(chain[-1])["self"]
    assert deepest.error["type"] == "SubWorkflowDepthExceeded"
    assert f"WECONNECT_MAX_SUBWORKFLOW_DEPTH={limit}" in deepest.error["message"]
