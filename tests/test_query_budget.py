"""The SQL a node run costs, held to a ceiling.

Every query on the node path is a round trip to PostgreSQL on every hop of every execution
(see docs/performance.md), so the counts are pinned here: a change that adds one fails this
test and has to raise the ceiling on purpose. The engine is called in-process on node runs
queued by execution_create; the test transaction never commits, so nothing is dispatched
and no worker can race the calls."""

from __future__ import annotations

import pytest

from executions.engine.execute import node_run_execute
from executions.models import Execution, NodeRun
from executions.services.executions import execution_create
from tests.support.workflows import edge, make_workflow, node

pytestmark = pytest.mark.django_db

# Per node run inside a transaction (the general path), counting BEGIN/COMMIT (here
# SAVEPOINT/RELEASE, inside the test transaction).
FIRST_NODE = 7  # claim, pending -> running, finish transaction (5)
MIDDLE_NODE = 6  # claim, finish transaction: record, execution status, queue successor
LAST_NODE = (
    9  # claim, finish transaction: record, status, completion (lock, check, outputs, update)
)
# What a worker really runs (autocommit): the claim, and a hop whose successors have this
# node as their only predecessor finishes in one statement.
HOP_FIRST = 2  # claim (which also starts the execution), finish-and-queue
HOP_MIDDLE = 2  # claim, finish-and-queue
HOP_LAST = 2  # claim, finish-and-complete (the single sink of its workflow)
# A predecessor of a join: lock the join's row and read the other predecessors; the first
# leaves it waiting (and skips the completion check), the second queues it.
JOIN_WAITS = 7
JOIN_QUEUED = 9  # ... and reads the outputs of the fired predecessors
JOIN_NODE = 9  # the join itself, here also the last node


def run(node_key: str, execution: Execution) -> str:
    return node_run_execute(execution_id=str(execution.id), node=node_key, task_id=f"t-{node_key}")


def test_chain_first_middle_and_last_node(user, django_assert_max_num_queries):
    keys = ["a", "b", "c", "d"]
    wf = make_workflow(
        user, [node(k) for k in keys], [edge(x, y) for x, y in zip(keys, keys[1:], strict=False)]
    )
    execution, _ = execution_create(workflow=wf, input={"x": 1})

    with django_assert_max_num_queries(FIRST_NODE):
        assert run("a", execution) == "succeeded"
    with django_assert_max_num_queries(MIDDLE_NODE):
        assert run("b", execution) == "succeeded"
    with django_assert_max_num_queries(MIDDLE_NODE):
        assert run("c", execution) == "succeeded"
    with django_assert_max_num_queries(LAST_NODE):
        assert run("d", execution) == "succeeded"

    execution.refresh_from_db()
    assert execution.status == "succeeded"
    assert execution.output == {"d": {"x": 1}}
    assert list(NodeRun.objects.filter(execution=execution).values_list("node", "attempts")) == [
        ("a", 1),
        ("b", 1),
        ("c", 1),
        ("d", 1),
    ]


def test_join_node(user, django_assert_max_num_queries):
    wf = make_workflow(
        user,
        [node("a"), node("b"), node("c"), node("join")],
        [edge("a", "b"), edge("a", "c"), edge("b", "join"), edge("c", "join")],
    )
    execution, _ = execution_create(workflow=wf, input={"x": 1})
    assert run("a", execution) == "succeeded"

    with django_assert_max_num_queries(JOIN_WAITS):
        assert run("b", execution) == "succeeded"
    assert NodeRun.objects.get(execution=execution, node="join").status == "pending"
    with django_assert_max_num_queries(JOIN_QUEUED):
        assert run("c", execution) == "succeeded"
    assert NodeRun.objects.get(execution=execution, node="join").status == "queued"
    with django_assert_max_num_queries(JOIN_NODE):
        assert run("join", execution) == "succeeded"

    execution.refresh_from_db()
    assert execution.status == "succeeded"
    assert execution.output == {"join": {"b": {"x": 1}, "c": {"x": 1}}}


def test_a_duplicate_message_costs_little(user, django_assert_max_num_queries):
    """A redelivered or duplicated message finds the run already claimed: the failed claim
    and the deadline check (its transaction and one EXISTS), nothing more."""
    wf = make_workflow(user, [node("a"), node("b")], [edge("a", "b")])
    execution, _ = execution_create(workflow=wf, input={})
    assert run("a", execution) == "succeeded"
    with django_assert_max_num_queries(4):
        assert run("a", execution) == "skipped"


@pytest.mark.django_db(transaction=True)
def test_two_racing_claims_claim_once(user):
    """Two messages for one queued run arrive together: the second claim blocks on the row
    lock of the first and, once that commits, must find the run taken (one attempt, the first
    task's id). The claim is the statement counted above, so its shape is pinned here too."""
    import threading
    import time

    from django.db import connections, transaction
    from django.utils import timezone

    from executions.engine.execute import claim

    wf = make_workflow(user, [node("a"), node("b")], [edge("a", "b")])
    execution, _ = execution_create(workflow=wf, input={})
    # "b" has no message anywhere (only "a" was dispatched), so nothing else claims it.
    NodeRun.objects.filter(execution=execution, node="b").update(status="queued")
    claimed: dict[str, bool] = {}
    first_holds_it = threading.Event()

    def first() -> None:
        try:
            with transaction.atomic():
                claimed["first"] = (
                    claim(str(execution.id), "b", "task-1", False, timezone.now()) is not None
                )
                first_holds_it.set()
                time.sleep(0.3)  # the second claim is now waiting for this row lock
        finally:
            first_holds_it.set()
            connections.close_all()

    def second() -> None:
        try:
            first_holds_it.wait(10)
            claimed["second"] = (
                claim(str(execution.id), "b", "task-2", False, timezone.now()) is not None
            )
        finally:
            connections.close_all()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not any(t.is_alive() for t in threads), "claims deadlocked"
    assert claimed == {"first": True, "second": False}
    run = NodeRun.objects.get(execution=execution, node="b")
    assert (run.status, run.attempts, run.task_id) == ("running", 1, "task-1")


@pytest.mark.django_db(transaction=True)
def test_worker_hops_in_autocommit(user, django_assert_num_queries):
    from tests.support.broker import PrivateBroker

    keys = ["a", "b", "c", "d"]
    wf = make_workflow(
        user, [node(k) for k in keys], [edge(x, y) for x, y in zip(keys, keys[1:], strict=False)]
    )
    with PrivateBroker():  # messages go to a broker no worker reads
        execution, _ = execution_create(workflow=wf, input={"x": 1})
        with django_assert_num_queries(HOP_FIRST):
            assert run("a", execution) == "succeeded"
        for key in ("b", "c"):
            with django_assert_num_queries(HOP_MIDDLE):
                assert run(key, execution) == "succeeded"
        with django_assert_num_queries(HOP_LAST):
            assert run("d", execution) == "succeeded"
    execution.refresh_from_db()
    assert execution.status == "succeeded" and execution.output == {"d": {"x": 1}}
    assert execution.started_at and execution.finished_at >= execution.started_at
    runs = NodeRun.objects.filter(execution=execution)
    assert set(runs.values_list("status", "attempts")) == {("succeeded", 1)}
    assert runs.get(node="c").input == {"x": 1}


@pytest.mark.django_db(transaction=True)
def test_the_store_statements_are_one_round_trip_each(user, django_assert_num_queries):
    """The counts above rest on three statements of the store: the claim (which also starts
    the execution), the end that queues the successors, the end that completes the
    execution. Each is pinned here at one query."""
    from datetime import timedelta

    from django.utils import timezone

    from executions import store
    from tests.support.broker import PrivateBroker

    wf = make_workflow(user, [node("a"), node("b")], [edge("a", "b")])
    with PrivateBroker():
        execution, _ = execution_create(workflow=wf, input={"x": 1})
        now = timezone.now()
        lease = now + timedelta(minutes=1)
        with django_assert_num_queries(1):
            claimed = store.node_run_claim(
                execution_id=str(execution.id),
                node="a",
                task_id="t-a",
                now=now,
                lease=lease,
                not_before=now,
            )
        assert claimed is not None and claimed.execution.status == "running"
        with django_assert_num_queries(1):
            done, status, queued, counted, ids = store.node_run_end_and_queue(
                execution_id=execution.id,
                node="a",
                attempt=1,
                status="succeeded",
                output={"x": 1},
                branch=None,
                error=None,
                now=now,
                successors=[("b", "t-b")],
            )
        assert (done, status, queued, counted) == (True, "running", [("b", "t-b")], {})
        assert set(ids) == {"b"}
        assert store.node_run_claim(
            execution_id=str(execution.id),
            node="b",
            task_id="t-b",
            now=now,
            lease=lease,
            not_before=now,
        )
        with django_assert_num_queries(1):
            done, finished, parent = store.node_run_end_and_complete(
                execution_id=execution.id,
                node="b",
                attempt=1,
                output={"x": 1},
                branch=None,
                execution_output={"b": {"x": 1}},
                now=now,
            )
        assert (done, finished, parent) == (True, True, None)
    execution.refresh_from_db()
    assert execution.status == "succeeded" and execution.output == {"b": {"x": 1}}


# The trigger path, POST /api/workflows/{id}/execute/ with a token: the token, the workflow
# and its version, the execution and its node runs, with and without an Idempotency-Key.
# The answer is built from the rows as written (nothing is read back).
TRIGGER = 7  # token, workflow, version, BEGIN, execution, node runs, COMMIT
# A second trigger of the same version: the version row is cached by the process (versions
# never change), and the idempotency lookup takes its place.
TRIGGER_WITH_KEY = 7


def test_the_trigger_path(api, user, django_assert_num_queries):
    wf = make_workflow(user, [node("a"), node("b")], [edge("a", "b")])
    with django_assert_num_queries(TRIGGER):
        r = api.post(f"/api/workflows/{wf.id}/execute/", {"input": {"x": 1}}, format="json")
    assert r.status_code == 202, r.content
    with django_assert_num_queries(TRIGGER_WITH_KEY):
        r = api.post(
            f"/api/workflows/{wf.id}/execute/",
            {"input": {"x": 2}},
            format="json",
            headers={"Idempotency-Key": "budget-1"},
        )
    assert r.status_code == 202, r.content
    # The same document as reading the execution back (no worker runs here: still pending).
    assert r.json() == api.get(f"/api/executions/{r.json()['id']}/").json()
    assert [n["node"] for n in r.json()["node_runs"]] == ["a", "b"]
    # The same key again: the existing execution, read.
    again = api.post(
        f"/api/workflows/{wf.id}/execute/",
        {"input": {"x": 2}},
        format="json",
        headers={"Idempotency-Key": "budget-1"},
    )
    assert again.status_code == 200 and again.json() == r.json()
