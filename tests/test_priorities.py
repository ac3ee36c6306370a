"""Execution priorities: chosen by the trigger body or the workflow's setting, carried by the
node runs' messages, and taken from the broker before older, less urgent work."""

from __future__ import annotations

import time

import pytest

from executions.engine.recovery import recovery_run
from executions.models import Execution, NodeRun
from executions.services.executions import execution_create
from tests.support.broker import PrivateBroker
from tests.support.workflows import edge, make_workflow, node, workflow_doc

pytestmark = [pytest.mark.django_db(transaction=True)]


def test_priority_from_the_body_or_the_workflow_default(api, user):
    r = api.post("/api/workflows/", workflow_doc([node("a")], priority="low"), format="json")
    assert r.status_code == 201 and r.json()["priority"] == "low"
    wf = r.json()["id"]
    r = api.post(f"/api/workflows/{wf}/execute/", {"input": {}}, format="json")
    assert r.status_code == 202 and r.json()["priority"] == "low"
    r = api.post(f"/api/workflows/{wf}/execute/", {"priority": "high"}, format="json")
    assert r.status_code == 202 and r.json()["priority"] == "high"
    assert Execution.objects.get(id=r.json()["id"]).priority == "high"
    # A retry keeps the priority of the execution it retries.
    ex = Execution.objects.get(id=r.json()["id"])
    Execution.objects.filter(id=ex.id).update(status="failed")
    r = api.post(f"/api/executions/{ex.id}/retry/", {}, format="json")
    assert r.status_code in (200, 201, 202) and r.json()["priority"] == "high"

    r = api.post("/api/workflows/", workflow_doc([node("a")]), format="json")
    assert r.json()["priority"] == "normal"


@pytest.mark.parametrize("value", ["urgent", 3, None])
def test_bad_priority_is_a_400_naming_the_field(api, user, value):
    wf = make_workflow(user, [node("a")])
    r = api.post(f"/api/workflows/{wf.id}/execute/", {"priority": value}, format="json")
    if value is None:  # null means "the workflow's default"
        assert r.status_code == 202
    else:
        assert r.status_code == 400 and "priority" in r.json(), r.content
    r = api.post("/api/workflows/", workflow_doc([node("a")], priority="urgent"), format="json")
    assert r.status_code == 400 and "priority" in r.json()


def test_every_node_run_message_carries_its_execution_priority(user):
    wf = make_workflow(
        user,
        [node("a", "test_delivery"), node("b", "test_delivery"), node("c", "test_delivery")],
        [edge("a", "b"), edge("b", "c")],
    )
    with PrivateBroker() as broker:
        broker.worker("pm", concurrency=1).start()
        ids = {
            p: execution_create(workflow=wf, input={}, priority=p)[0].id
            for p in ("high", "normal", "low")
        }
        deadline = time.monotonic() + 60
        while Execution.objects.filter(id__in=ids.values(), status="succeeded").count() < 3:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    expected = {"high": 0, "normal": 3, "low": 6}
    for p, ex_id in ids.items():
        # Successors are sent by the predecessor's task and inherit its message's priority.
        seen = {r.node: r.output["priority"] for r in NodeRun.objects.filter(execution_id=ex_id)}
        assert seen == {"a": expected[p], "b": expected[p], "c": expected[p]}, (p, seen)


def test_high_priority_execution_overtakes_a_low_priority_backlog(user, settings):
    settings.WECONNECT_REDISPATCH_AFTER_SECONDS = 600  # recovery must not reorder anything
    backlog_wf = make_workflow(user, [node("work", "test_behave", config={"sleep": 0.01})])
    urgent_wf = make_workflow(
        user, [node("a"), node("b"), node("c")], [edge("a", "b"), edge("b", "c")]
    )
    with PrivateBroker() as broker:
        worker = broker.worker("prio", concurrency=2)
        # The backlog is queued before any worker runs, so it is all waiting on the broker.
        backlog = [
            execution_create(workflow=backlog_wf, input={"i": i}, priority="low")[0].id
            for i in range(500)
        ]
        urgent, _ = execution_create(workflow=urgent_wf, input={}, priority="high")
        worker.start()
        deadline = time.monotonic() + 300
        while (
            Execution.objects.filter(id__in=[*backlog, urgent.id], status="succeeded").count() < 501
        ):
            assert time.monotonic() < deadline, "backlog not drained"
            time.sleep(0.5)
        recovery_run()
    urgent.refresh_from_db()
    finishes = sorted(
        Execution.objects.filter(id__in=backlog).values_list("finished_at", flat=True)
    )
    ninetieth = finishes[int(len(finishes) * 0.9) - 1]
    assert urgent.finished_at < ninetieth, (urgent.finished_at, finishes[0], ninetieth)
    before = sum(1 for f in finishes if f < urgent.finished_at)
    print(f"urgent chain finished after {before} of {len(finishes)} backlog executions")


@pytest.mark.worker
def test_a_sub_workflow_runs_at_its_parents_priority(user, worker):
    child_wf = make_workflow(user, [node("probe", "test_delivery")], name="child")
    parent_wf = make_workflow(
        user,
        [node("call", "sub_workflow", config={"workflow": str(child_wf.id)})],
        priority="normal",
    )
    parent, _ = execution_create(workflow=parent_wf, input={}, priority="low")
    deadline = time.monotonic() + 60
    while Execution.objects.get(id=parent.id).status != "succeeded":
        assert time.monotonic() < deadline, "parent not finished"
        time.sleep(0.1)
    child = Execution.objects.get(parent_node_run__execution=parent)
    assert child.priority == "low"
    assert child.node_runs.get().output == {"priority": 6}
