"""Pure node types: a hop without a claim.

A node type that declares itself pure (noop, transform, condition, switch, merge) is read, run,
and ended from ``queued`` by one statement that is itself the compare-and-set. These tests pin
what that path writes (once per hop), what it refuses (a run that moved on, an execution that
stopped), where it hands over to the claim (failures, joins, rate limits), and that the message
carries the hint only for such nodes.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import threading

import pytest
import redis
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from executions import store
from executions.engine import dispatch
from executions.engine.execute import node_run_execute
from executions.engine.snapshots import graph_for
from executions.graph import Edge, Graph, NodeSpec
from executions.models import Execution, NodeRun
from executions.services.executions import execution_create
from tests.support.broker import PrivateBroker
from tests.support.workflows import edge, end_hop, make_workflow, node, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

WRITES = ("UPDATE", "INSERT", "DELETE", "WITH")


def run(key: str, execution: Execution, task_id: str | None = None, pure: bool = True) -> str:
    return node_run_execute(
        execution_id=str(execution.id), node=key, task_id=task_id or f"t-{key}", pure=pure
    )


def _writes(queries) -> list[str]:
    # Every write of the engine is an UPDATE (the one-statement forms are WITH ... UPDATE);
    # the read is a plain SELECT.
    return [q["sql"] for q in queries if q["sql"].lstrip().upper().startswith(WRITES)]


def sent(broker, headers: dict | None = None) -> dict[str, dict]:
    """The keyword arguments of every run_node message waiting in the broker, by node (and
    their headers into ``headers``)."""
    client = redis.Redis.from_url(broker.url)
    kwargs = {}
    for key in client.keys("*"):
        if client.type(key) != b"list":
            continue
        for raw in client.lrange(key, 0, -1):
            message = json.loads(raw)
            args, kw, _ = json.loads(base64.b64decode(message["body"]))
            kwargs[args[1]] = kw
            if headers is not None:
                headers[args[1]] = message["headers"]
        client.delete(key)
    return kwargs


def test_a_carried_context_spares_the_read(user, settings):
    """The end of a hop sends the pure successor's message with its input and its execution's
    context; the successor's task then runs one statement, its end. A context that no longer
    holds (the run ended meanwhile) records nothing; one too large is not carried."""
    keys = ["a", "b", "c"]
    wf = make_workflow(
        user, [node(k) for k in keys], [edge(x, y) for x, y in zip(keys, keys[1:], strict=False)]
    )
    with PrivateBroker() as broker:
        execution, _ = execution_create(workflow=wf, input={"x": 1})
        assert sent(broker) == {"a": {"pure": True}}
        assert run("a", execution) == "succeeded"
        headers: dict = {}
        kw = sent(broker, headers)["b"]
        assert kw["pure"] is True and kw["run"]["input"] == {"x": 1}
        # Monitoring (Flower, task events) shows the run, not its input.
        assert headers["b"]["kwargsrepr"] == repr(
            {"pure": True, "run": f"<node run {kw['run']['id']}>"}
        )
        assert kw["run"]["execution"]["input"] == {"x": 1}
        with CaptureQueriesContext(connection) as ctx:
            outcome = node_run_execute(
                execution_id=str(execution.id),
                node="b",
                task_id="t-b",
                pure=True,
                carried=kw["run"],
            )
        assert outcome == "succeeded"
        assert len(ctx.captured_queries) == 1 and len(_writes(ctx.captured_queries)) == 1
        # The same message again (a duplicate): its end finds b ended, nothing is recorded.
        again = node_run_execute(
            execution_id=str(execution.id), node="b", task_id="t-b2", pure=True, carried=kw["run"]
        )
        assert again == "discarded"
        b = NodeRun.objects.get(execution=execution, node="b")
        assert (b.status, b.attempts, b.task_id, b.output) == ("succeeded", 1, "t-b", {"x": 1})
        assert b.worker and b.started_at and b.queued_at
        kw = sent(broker)["c"]
        assert len(kw["run"]["execution"]) == 7
        assert (
            node_run_execute(
                execution_id=str(execution.id),
                node="c",
                task_id="t-c",
                pure=True,
                carried=kw["run"],
            )
            == "succeeded"
        )
        execution.refresh_from_db()
        assert execution.status == "succeeded" and execution.output == {"c": {"x": 1}}

        settings.WECONNECT_CARRY_MAX_BYTES = 64
        big, _ = execution_create(workflow=wf, input={"x": "y" * 100})
        sent(broker)
        assert run("a", big) == "succeeded"
        assert sent(broker) == {"b": {"pure": True}}  # too large to carry: b's task reads it


def test_a_pure_chain_writes_once_per_hop(user):
    keys = ["a", "b", "c", "d"]
    wf = make_workflow(
        user, [node(k) for k in keys], [edge(x, y) for x, y in zip(keys, keys[1:], strict=False)]
    )
    with PrivateBroker():  # messages go to a broker no worker reads
        execution, _ = execution_create(workflow=wf, input={"x": 1})
        for key in keys:
            with CaptureQueriesContext(connection) as ctx:
                assert run(key, execution) == "succeeded"
            assert len(ctx.captured_queries) == 2, [q["sql"][:60] for q in ctx.captured_queries]
            first, second = (q["sql"].lstrip().upper() for q in ctx.captured_queries)
            assert first.startswith("SELECT") and second.startswith("WITH")
            assert len(_writes(ctx.captured_queries)) == 1
    execution.refresh_from_db()
    assert execution.status == "succeeded" and execution.output == {"d": {"x": 1}}
    assert execution.started_at and execution.finished_at >= execution.started_at
    for r in NodeRun.objects.filter(execution=execution):
        # What the claim would have recorded, written by the end instead.
        assert (r.status, r.attempts, r.task_id) == ("succeeded", 1, f"t-{r.node}")
        assert r.worker and r.started_at and r.finished_at >= r.started_at >= r.queued_at
        assert r.lease_expires_at is None


def test_a_duplicate_message_computes_again_and_one_result_is_kept(user):
    """Two messages for one queued run both read it and both run the type; the first end
    records, the second finds the run no longer queued and records nothing, and the successor
    is queued once."""
    wf = make_workflow(user, [node("a"), node("b")], [edge("a", "b")])
    with PrivateBroker():
        execution, _ = execution_create(workflow=wf, input={"x": 1})
        now = timezone.now()
        first = store.node_run_peek(
            execution_id=str(execution.id), node="a", now=now, not_before=now
        )
        second = store.node_run_peek(
            execution_id=str(execution.id), node="a", now=now, not_before=now
        )
        assert first is not None and second is not None and first.attempts == second.attempts == 1
        results = [
            end_hop(execution, "a", output={"x": 1}, successors=[("b", f"b-{t}")], task_id=t)
            for t in ("m-1", "m-2")
        ]
        assert results == [
            (True, "pending", [("b", "b-m-1")], {}),
            (False, "running", [], {}),
        ]
        a = NodeRun.objects.get(execution=execution, node="a")
        assert (a.status, a.attempts, a.task_id) == ("succeeded", 1, "m-1")
        assert NodeRun.objects.get(execution=execution, node="b").task_id == "b-m-1"
        # And through the task body: the message for an ended run does nothing.
        assert run("a", execution, task_id="m-3") == "skipped"
        assert NodeRun.objects.get(execution=execution, node="a").attempts == 1


def test_racing_pure_messages_record_one_end(user):
    """Two threads run the same pure hop at once: the second end blocks on the first's row
    lock and, once that commits, records nothing."""
    wf = make_workflow(user, [node("a"), node("b")], [edge("a", "b")])
    with PrivateBroker():
        execution, _ = execution_create(workflow=wf, input={"x": 1})
        barrier = threading.Barrier(2)
        outcomes: dict[str, str] = {}

        def one(task_id: str) -> None:
            try:
                barrier.wait(10)
                outcomes[task_id] = run("a", execution, task_id=task_id)
            finally:
                connections.close_all()

        threads = [threading.Thread(target=one, args=(t,)) for t in ("r-1", "r-2")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads)
    assert sorted(outcomes.values()) in (["discarded", "succeeded"], ["skipped", "succeeded"])
    a = NodeRun.objects.get(execution=execution, node="a")
    assert a.status == "succeeded" and a.attempts == 1
    assert a.task_id == next(t for t, o in outcomes.items() if o == "succeeded")
    assert NodeRun.objects.get(execution=execution, node="b").status == "queued"


def test_an_execution_stopped_while_the_node_ran_records_nothing(user):
    wf = make_workflow(user, [node("a"), node("b")], [edge("a", "b")])
    with PrivateBroker():
        execution, _ = execution_create(workflow=wf, input={})
        now = timezone.now()
        assert store.node_run_peek(
            execution_id=str(execution.id), node="a", now=now, not_before=now
        )
        Execution.objects.filter(id=execution.id).update(status="cancelled")
        done, status, queued, counted = end_hop(
            execution, "a", output={}, successors=[("b", "t-b")]
        )
    assert (done, queued, counted) == (False, [], {})
    assert NodeRun.objects.get(execution=execution, node="a").status == "queued"
    assert NodeRun.objects.get(execution=execution, node="b").status == "pending"


def test_a_run_that_is_not_queued_is_claimed_as_usual(user):
    """The peek only takes a queued, due run: a retrying one (or a running one to take over)
    goes to the claim, which tells what to do."""
    wf = make_workflow(user, [node("a")], [])
    with PrivateBroker():
        execution, _ = execution_create(workflow=wf, input={})
        NodeRun.objects.filter(execution=execution, node="a").update(
            status="retrying", attempts=1, next_attempt_at=timezone.now()
        )
        assert run("a", execution) == "succeeded"
    a = NodeRun.objects.get(execution=execution, node="a")
    assert (a.status, a.attempts) == ("succeeded", 2)


def test_a_failure_claims_the_run_and_fails_it(user):
    """A transform whose expression fails (not retryable): the pure hop hands over to the
    claim, and the failure is recorded and fails the execution exactly as for any node."""
    wf = make_workflow(
        user,
        [
            node(
                "t",
                "transform",
                config={"fields": {"v": "{{ 1 // input.zero }}"}},
                retry={"max_retries": 1, "backoff_seconds": 0.1, "jitter": False},
            )
        ],
        [],
    )
    with PrivateBroker():
        execution, _ = execution_create(workflow=wf, input={"zero": 0})
        outcome = run("t", execution)
    t = NodeRun.objects.get(execution=execution, node="t")
    assert outcome == "failed"
    assert t.status == "failed" and t.attempts == 1 and t.worker and t.started_at
    assert "ZeroDivisionError" in t.error["message"]
    execution.refresh_from_db()
    assert execution.status == "failed"


def test_a_predecessor_of_a_join_claims_then_ends_the_general_way(user):
    """A message claiming purity for a node whose end needs the general path (sent by hand,
    or by an older sender): the run is claimed and ended the general way."""
    wf = make_workflow(
        user,
        [node("a"), node("b"), node("c"), node("join", "merge")],
        [edge("a", "b"), edge("a", "c"), edge("b", "join"), edge("c", "join")],
    )
    with PrivateBroker():
        execution, _ = execution_create(workflow=wf, input={"x": 1})
        for key in ("a", "b", "c", "join"):
            assert run(key, execution) == "succeeded"
    execution.refresh_from_db()
    assert execution.status == "succeeded"
    assert execution.output == {"join": {"b": {"x": 1}, "c": {"x": 1}}}
    assert set(NodeRun.objects.filter(execution=execution).values_list("attempts", flat=True)) == {
        1
    }


def test_the_message_carries_the_hint_only_for_pure_nodes(user):
    wf = make_workflow(
        user,
        [
            node("plain"),
            node("after"),
            node("call", "http_request", config={"url": "http://127.0.0.1:9/"}),
            node("after_call"),
        ],
        [edge("plain", "after"), edge("call", "after_call")],
    )
    with PrivateBroker() as broker:
        execution, _ = execution_create(workflow=wf, input={})
        graph = graph_for(execution.snapshot_id)
        kwargs = sent(broker)
    # Start nodes' messages carry the hint only: their input is the execution's, read.
    assert kwargs == {"plain": {"pure": True}, "call": {}}
    assert dispatch.takes_pure_path(graph, "plain")
    assert not dispatch.takes_pure_path(graph, "call")
    # One of two sinks: its end cannot complete the execution in one statement.
    assert not dispatch.takes_pure_path(graph, "after")
    limited = Graph(
        [dataclasses.replace(n, rate_limit={"name": "github"}) for n in graph.nodes.values()],
        graph.edges,
    )
    assert not dispatch.takes_pure_path(limited, "plain")


def test_which_ends_take_one_statement():
    g = Graph(
        [NodeSpec(k, "noop") for k in ("a", "b", "c", "if", "yes", "no", "j", "z")],
        [
            Edge("a", "b"),
            Edge("b", "if"),
            Edge("if", "yes", branch="true"),
            Edge("if", "no", branch="false"),
            Edge("yes", "j"),
            Edge("no", "j"),
            Edge("j", "z"),
            Edge("a", "c", type="error"),
            Edge("c", "z"),
        ],
    )
    assert g.ends_in_one_statement("b")  # its only successor has it as only predecessor
    assert not g.ends_in_one_statement("a")  # an error route to skip on success
    assert not g.ends_in_one_statement("if")  # branches: one side is skipped
    assert g.ends_in_one_statement("yes")  # a predecessor of a join: counts it down
    assert g.ends_in_one_statement("j")  # its successor z is a join (of j and c)
    assert g.ends_in_one_statement("z")  # the only sink: its success completes the execution
    assert Graph([NodeSpec("only", "noop")], []).ends_in_one_statement("only")
    assert not Graph([NodeSpec("x", "noop"), NodeSpec("y", "noop")], []).ends_in_one_statement("x")


def test_a_retryable_failure_is_retried_and_the_retry_ends_in_one_write(user):
    """A pure type failing its first attempt: the failure claims the run and schedules the
    retry; the retry's message finds it retrying (not queued), so it is claimed too, and the
    execution succeeds with two attempts, the first in the attempt log."""
    wf = make_workflow(
        user,
        [
            node(
                "p",
                "test_pure_behave",
                config={"fail_attempts": 1, "output": {"ok": True}},
                retry={"max_retries": 2, "backoff_seconds": 0.1, "jitter": False},
            ),
            node("after"),
        ],
        [edge("p", "after")],
    )
    with PrivateBroker():
        execution, _ = execution_create(workflow=wf, input={})
        assert run("p", execution) == "retrying"
        p = NodeRun.objects.get(execution=execution, node="p")
        assert (p.status, p.attempts) == ("retrying", 1)
        NodeRun.objects.filter(id=p.id).update(next_attempt_at=timezone.now())
        assert run("p", execution, task_id="t-p-2") == "succeeded"
        assert run("after", execution) == "succeeded"
    p.refresh_from_db()
    assert (p.status, p.attempts, p.output) == ("succeeded", 2, {"ok": True})
    assert [e["attempt"] for e in p.attempt_log] == [1]
    execution.refresh_from_db()
    assert execution.status == "succeeded"


def test_pure_and_impure_nodes_through_a_worker(worker, user):
    """A worker runs a line of pure nodes around one that fails once and one with side
    effects: every run ends with one attempt but the failing one (two), and the output
    flows through."""
    wf = make_workflow(
        user,
        [
            node("start"),
            node(
                "flaky",
                "test_pure_behave",
                config={"fail_attempts": 1},
                retry={"max_retries": 2, "backoff_seconds": 0.1, "jitter": False},
            ),
            node("shape", "transform", config={"fields": {"n": "{{ input.n + 1 }}"}}),
            node("impure", "test_behave"),
            node("end"),
        ],
        [
            edge("start", "flaky"),
            edge("flaky", "shape"),
            edge("shape", "impure"),
            edge("impure", "end"),
        ],
    )
    execution, _ = execution_create(workflow=wf, input={"n": 1})
    done = wait_for(execution.id, timeout=60)
    assert done.status == "succeeded", done.error
    assert done.output == {"end": {"n": 2}}
    attempts = dict(NodeRun.objects.filter(execution=done).values_list("node", "attempts"))
    assert attempts == {"start": 1, "flaky": 2, "shape": 1, "impure": 1, "end": 1}
    assert all(NodeRun.objects.filter(execution=done).values_list("worker", flat=True))
