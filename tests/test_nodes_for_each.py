"""The for_each node: a child execution per item, at most ``concurrency`` at a time, outputs in
item order, failures by index, cancelled with its parent, each item started exactly once."""

from __future__ import annotations

import threading
import time

import pytest

from executions.engine.recovery import recovery_run
from executions.engine.start import child_starter
from executions.errors import Conflict
from executions.models import Execution, NodeRun
from executions.services.executions import execution_cancel, execution_create
from executions.states import EXECUTION_UNFINISHED
from tests.support.broker import PrivateBroker
from tests.support.workflows import edge, make_workflow, node, run, runs_by_node, wait_for

pytestmark = [pytest.mark.django_db(transaction=True)]

NO_RETRY = {"max_retries": 0}


def slow_child(user, seconds: float = 0.5):
    return make_workflow(
        user,
        [
            node("hold", "test_behave", config={"sleep": seconds}),
            node("calc", "transform", config={"fields": {"value": "{{ input.item * 10 }}"}}),
        ],
        [edge("hold", "calc")],
        name="child",
    )


def failing_child(user, hold: float = 1.0):
    """Item 0 fails at once; every other item takes ``hold`` seconds and succeeds."""
    return make_workflow(
        user,
        [
            node("check", "condition", config={"expression": "input.item == 0"}),
            node("boom", "stop_and_error", config={"message": "item zero is refused"}),
            node("hold", "test_behave", config={"sleep": hold}),
            node("ok", "transform", config={"fields": {"item": "{{ input.item }}"}}),
        ],
        [
            edge("check", "boom", branch="true"),
            edge("check", "hold", branch="false"),
            edge("hold", "ok"),
        ],
        name="child",
    )


def for_each_workflow(user, child, **config):
    return make_workflow(
        user,
        [
            node(
                "each",
                "for_each",
                retry=NO_RETRY,
                config={"items": "{{ input.items }}", "workflow": str(child.id), **config},
            ),
            node("after"),
        ],
        [edge("each", "after")],
        name="parent",
    )


class UnfinishedSampler(threading.Thread):
    """The most children of one parent found unfinished at once, sampled every 20 ms."""

    def __init__(self, child_workflow) -> None:
        super().__init__(daemon=True)
        self.child_workflow = child_workflow
        self.stop = threading.Event()
        self.most = 0

    def run(self) -> None:
        from django.db import connection

        try:
            while not self.stop.wait(0.02):
                n = Execution.objects.filter(
                    workflow=self.child_workflow, status__in=EXECUTION_UNFINISHED
                ).count()
                self.most = max(self.most, n)
        finally:
            connection.close()


def test_outputs_in_item_order_never_more_than_concurrency_at_once(worker, user):
    child = slow_child(user)
    parent = for_each_workflow(user, child, concurrency=3)
    sampler = UnfinishedSampler(child)
    sampler.start()
    try:
        ex = run(parent, {"items": list(range(12))}, timeout=90)
    finally:
        sampler.stop.set()
        sampler.join()
    assert ex.status == "succeeded", ex.error
    each = runs_by_node(ex)["each"]
    assert each.output == {
        "results": [{"calc": {"value": i * 10}} for i in range(12)],
        "failures": [],
    }
    assert runs_by_node(ex)["after"].input == each.output
    assert each.attempts == 1  # waiting and waking are not attempts
    children = list(Execution.objects.filter(parent_node_run_id=each.id).order_by("item_index"))
    assert [c.item_index for c in children] == list(range(12))
    assert {c.trigger for c in children} == {"for_each"}
    assert {c.depth for c in children} == {1}
    assert [c.input for c in children] == [{"item": i, "index": i} for i in range(12)]
    # Never more than 3 at once, and really in parallel (not one after another).
    assert 2 <= sampler.most <= 3, sampler.most


def test_first_failed_item_fails_the_node_and_cancels_the_rest(worker, user):
    child = failing_child(user, hold=3.0)
    parent = for_each_workflow(user, child, concurrency=2, on_item_error="fail")
    ex = run(parent, {"items": [1, 0, 2, 3, 4, 5]}, timeout=60)
    assert ex.status == "failed"
    each = runs_by_node(ex)["each"]
    assert each.status == "failed" and each.attempts == 1
    assert each.error["type"] == "ForEachItemFailed"
    assert each.error["index"] == 1 and each.error["child_status"] == "failed"
    assert "item zero is refused" in each.error["message"]
    children = Execution.objects.filter(parent_node_run_id=each.id)
    # Items 0 and 1 were started; item 0 (still holding) was cancelled; nothing after them.
    assert sorted(children.values_list("item_index", flat=True)) == [0, 1]
    assert dict(children.values_list("item_index", "status")) == {0: "cancelled", 1: "failed"}
    time.sleep(1.5)
    assert children.count() == 2


def test_continue_runs_every_item_and_reports_failures_by_index(worker, user):
    child = failing_child(user, hold=0.2)
    parent = for_each_workflow(user, child, concurrency=4, on_item_error="continue")
    ex = run(parent, {"items": [0, 1, 0, 2]}, timeout=60)
    assert ex.status == "succeeded", ex.error
    out = runs_by_node(ex)["each"].output
    assert out["results"] == [None, {"ok": {"item": 1}}, None, {"ok": {"item": 2}}]
    assert [f["index"] for f in out["failures"]] == [0, 2]
    assert {f["status"] for f in out["failures"]} == {"failed"}
    assert out["failures"][0]["message"] == "item zero is refused"
    assert out["failures"][0]["error"]["node"] == "boom"


@pytest.mark.parametrize(
    ("items", "error_type", "phrase"),
    [
        (7, "ForEachItemsInvalid", "must yield a list, got a number"),
        ({"a": 1}, "ForEachItemsInvalid", "got an object"),
        (list(range(10_001)), "ForEachTooManyItems", "more than WECONNECT_MAX_ITEMS (10000)"),
    ],
)
def test_not_a_list_or_too_many_items_fails_once(worker, user, items, error_type, phrase):
    child = slow_child(user, 0)
    wf = make_workflow(
        user,
        [
            node(
                "each",
                "for_each",
                retry={"max_retries": 3, "backoff_seconds": 0.1},
                config={"items": "{{ input.items }}", "workflow": str(child.id)},
            )
        ],
    )
    ex = run(wf, {"items": items}, timeout=60)
    assert ex.status == "failed"
    each = runs_by_node(ex)["each"]
    assert each.attempts == 1  # not retried
    assert each.error["type"] == error_type and phrase in each.error["message"]
    assert not Execution.objects.filter(workflow=child).exists()


def test_cancelling_the_parent_stops_its_children_and_starts_no_more(worker, user):
    child = slow_child(user, 4.0)
    parent = for_each_workflow(user, child, concurrency=2)
    ex, _ = execution_create(workflow=parent, input={"items": list(range(10))})
    deadline = time.monotonic() + 30
    while Execution.objects.filter(workflow=child, status="running").count() < 2:
        assert time.monotonic() < deadline, "children never ran"
        time.sleep(0.05)
    execution_cancel(execution=Execution.objects.get(id=ex.id))
    ex = wait_for(ex.id, timeout=30)
    assert ex.status == "cancelled"
    children = Execution.objects.filter(workflow=child)
    deadline = time.monotonic() + 15
    while children.filter(status__in=EXECUTION_UNFINISHED).exists():
        assert time.monotonic() < deadline, list(children.values_list("status", flat=True))
        time.sleep(0.1)
    assert set(children.values_list("status", flat=True)) == {"cancelled"}
    time.sleep(2)
    assert children.count() == 2


def test_a_child_start_is_keyed_by_parent_run_and_index(user):
    """Starting item k again (a run that died after starting it) finds the same child; once
    the parent has ended no child starts. The calls are the engine's own; a long delay before
    the loop keeps any running worker away from its node run."""
    child = slow_child(user, 0)
    parent = make_workflow(
        user,
        [
            node("first", "delay", config={"seconds": 600}),
            node("each", "for_each", config={"items": [1, 2], "workflow": str(child.id)}),
        ],
        [edge("first", "each")],
    )
    ex, _ = execution_create(workflow=parent, input={})
    each = NodeRun.objects.get(execution=ex, node="each")
    start = child_starter(node_run_id=each.id, depth=0)
    first = start(workflow=child, input={"item": 1, "index": 0}, item_index=0)
    again = start(workflow=child, input={"item": 1, "index": 0}, item_index=0)
    other = start(workflow=child, input={"item": 2, "index": 1}, item_index=1)
    assert again.id == first.id and other.id != first.id
    assert Execution.objects.filter(parent_node_run_id=each.id).count() == 2
    assert first.idempotency_key == f"for_each:{each.id}:0" and first.trigger == "for_each"

    execution_cancel(execution=Execution.objects.get(id=ex.id))
    with pytest.raises(Conflict, match="parent execution has ended"):
        start(workflow=child, input={"item": 3, "index": 2}, item_index=2)
    assert Execution.objects.filter(parent_node_run_id=each.id).count() == 2


def test_workers_killed_mid_loop_lose_no_item_and_start_none_twice(user, settings):
    settings.WECONNECT_REDISPATCH_AFTER_SECONDS = 1
    lease = {"WECONNECT_LEASE_SECONDS": "3", "WECONNECT_HEARTBEAT_SECONDS": "1"}
    child = slow_child(user, 0.3)
    parent = for_each_workflow(user, child, concurrency=5)
    with PrivateBroker() as broker:
        w = broker.worker("fe1", concurrency=3, **lease).start()
        ex, _ = execution_create(workflow=parent, input={"items": list(range(30))})
        for kill_at in (5, 15):
            deadline = time.monotonic() + 60
            while Execution.objects.filter(workflow=child).count() < kill_at:
                assert time.monotonic() < deadline, "the loop stalled"
                recovery_run()
                time.sleep(0.05)
            w.kill()  # the whole worker, mid-loop
            w = broker.worker(f"fe{kill_at}", concurrency=3, **lease).start()
        deadline = time.monotonic() + 120
        while Execution.objects.get(id=ex.id).status in EXECUTION_UNFINISHED:
            assert time.monotonic() < deadline, "not finished"
            recovery_run()  # as Beat would
            time.sleep(0.3)
    ex = Execution.objects.get(id=ex.id)
    assert ex.status == "succeeded", ex.error
    indexes = list(Execution.objects.filter(workflow=child).values_list("item_index", flat=True))
    assert sorted(indexes) == list(range(30))  # every item once: none lost, none twice
    each = runs_by_node(ex)["each"]
    assert each.output["results"] == [{"calc": {"value": i * 10}} for i in range(30)]


def test_children_are_listed_by_parent_in_the_api(worker, user, api):
    child = slow_child(user, 0)
    parent = for_each_workflow(user, child, concurrency=5)
    ex = run(parent, {"items": [1, 2, 3]}, timeout=60)
    assert ex.status == "succeeded", ex.error
    each = runs_by_node(ex)["each"]
    make_workflow(user, [node("x")], name="unrelated")
    by_execution = api.get(f"/api/executions/?parent_execution={ex.id}").json()["results"]
    by_run = api.get(f"/api/executions/?parent_node_run={each.id}").json()["results"]
    kids = set(Execution.objects.filter(parent_node_run_id=each.id).values_list("id", flat=True))
    assert {r["id"] for r in by_execution} == {str(k) for k in kids} == {r["id"] for r in by_run}
    assert sorted(r["item_index"] for r in by_run) == [0, 1, 2]
    assert {r["parent_node_run"] for r in by_run} == {each.id}
    detail = api.get(f"/api/executions/{by_run[0]['id']}/").json()
    assert detail["parent_execution"] == str(ex.id) and detail["trigger"] == "for_each"

    bad = api.get("/api/executions/?parent_execution=nope")
    assert bad.status_code == 400 and "parent_execution" in bad.json()
    bad = api.get("/api/executions/?parent_node_run=x")
    assert bad.status_code == 400 and "parent_node_run" in bad.json()


def test_bad_config_is_refused_at_save_naming_the_field(api, user):
    child = make_workflow(user, [node("x")])
    doc = {
        "name": "bad loop",
        "nodes": [
            {
                "key": "each",
                "type": "for_each",
                "config": {
                    "items": "{{ input.items ",
                    "workflow": str(child.id),
                    "concurrency": 0,
                    "on_item_error": "explode",
                },
            }
        ],
        "connections": [],
    }
    res = api.post("/api/workflows/", doc, format="json")
    assert res.status_code == 400
    text = str(res.json())
    assert "concurrency" in text and "on_item_error" in text


def test_the_admin_links_a_loop_to_its_children_and_back(worker, user, admin_client):
    child = slow_child(user, 0)
    parent = for_each_workflow(user, child, concurrency=5)
    ex = run(parent, {"items": [1, 2]}, timeout=60)
    assert ex.status == "succeeded", ex.error
    kids = list(Execution.objects.filter(workflow=child).order_by("item_index"))
    page = admin_client.get(f"/admin/executions/execution/{ex.id}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    link = f"?parent_node_run__execution__id__exact={ex.id}"
    assert link in html and "2 child executions" in html
    listing = admin_client.get("/admin/executions/execution/" + link)
    assert listing.status_code == 200
    listed = listing.content.decode()
    assert all(str(k.id) in listed for k in kids)
    assert f'title="{ex.id}"' not in listed and f'title="{kids[0].id}"' in listed
    kid_page = admin_client.get(f"/admin/executions/execution/{kids[1].id}/change/").content
    assert f"/admin/executions/execution/{ex.id}/change/" in kid_page.decode()
    assert "node each, item 1" in kid_page.decode()


def test_parent_filters_refuse_out_of_range_ids(api):
    for value in ("0", "-3", str(2**63), "1.5"):
        res = api.get(f"/api/executions/?parent_node_run={value}")
        assert res.status_code == 400 and "parent_node_run" in res.json(), (value, res.content)
    assert api.get(f"/api/executions/?parent_node_run={2**63 - 1}").json()["results"] == []
