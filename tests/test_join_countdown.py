"""Joins counted down: each predecessor's end takes one off the join's ``predecessors_left``
in the statement that records it; the end that brings it to 0 decides the join. These tests
pin the counts, the statements a predecessor costs, the recovery of a decision lost with its
process, and the recount after an unpause (runs that end while paused count nothing down)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from executions import store
from executions.engine.execute import node_run_execute
from executions.engine.recovery import recovery_run
from executions.models import Execution, NodeRun
from executions.services.executions import execution_create
from executions.services.pause import execution_pause, execution_unpause
from tests.support.broker import PrivateBroker
from tests.support.workflows import edge, end_hop, make_workflow, node

pytestmark = pytest.mark.django_db(transaction=True)

# A predecessor of a join that leaves it waiting: the claim and one statement (end, count
# down); pure (noop): the read and that statement.
PREDECESSOR_WAITS = 2
# The one that brings it to 0: the same two, then the decision in a transaction of its own:
# BEGIN, the join's row locked, the execution's status, the predecessors' statuses, the
# outputs of those that fired, the join queued, COMMIT.
PREDECESSOR_DECIDES = 2 + 7


def diamond(user, middle_type="noop", join_type="merge"):
    return make_workflow(
        user,
        [node("a"), node("b", middle_type), node("c", middle_type), node("join", join_type)],
        [edge("a", "b"), edge("a", "c"), edge("b", "join"), edge("c", "join")],
    )


def left(execution, key="join"):
    return NodeRun.objects.values_list("status", "predecessors_left").get(
        execution=execution, node=key
    )


def run(key, execution, pure):
    return node_run_execute(execution_id=str(execution.id), node=key, task_id=f"t-{key}", pure=pure)


def test_created_with_the_count_of_its_predecessors(user):
    wf = make_workflow(
        user,
        [node("a"), node("b"), node("c"), node("d"), node("j3"), node("j2")],
        [
            edge("a", "b"),
            edge("a", "c"),
            edge("a", "d"),
            edge("b", "j3"),
            edge("c", "j3"),
            edge("d", "j3"),
            # Two connections from one predecessor count once.
            edge("j3", "j2"),
            edge("j3", "j2", type="error"),
            edge("a", "j2"),
        ],
    )
    with PrivateBroker():
        execution, _ = execution_create(workflow=wf, input={})
    counts = dict(
        NodeRun.objects.filter(execution=execution).values_list("node", "predecessors_left")
    )
    assert counts == {"a": None, "b": None, "c": None, "d": None, "j3": 3, "j2": 2}


@pytest.mark.parametrize("pure", [True, False])
def test_the_predecessors_count_it_down_and_the_last_decides(user, pure):
    """Through the task body on both paths (pure: read and one statement; claimed: claim and
    one statement), with the statements each predecessor costs pinned."""
    wf = diamond(user, middle_type="noop" if pure else "test_behave")
    with PrivateBroker():
        execution, _ = execution_create(workflow=wf, input={"x": 1})
        assert run("a", execution, pure=True) == "succeeded"
        assert left(execution) == ("pending", 2)
        with CaptureQueriesContext(connection) as ctx:
            assert run("b", execution, pure) == "succeeded"
        assert len(ctx.captured_queries) == PREDECESSOR_WAITS
        assert left(execution) == ("pending", 1)
        with CaptureQueriesContext(connection) as ctx:
            assert run("c", execution, pure) == "succeeded"
        assert len(ctx.captured_queries) == PREDECESSOR_DECIDES, [
            q["sql"][:70] for q in ctx.captured_queries
        ]
        assert left(execution) == ("queued", 0)
        assert run("join", execution, pure=True) == "succeeded"
    execution.refresh_from_db()
    assert execution.status == "succeeded"
    assert execution.output == {"join": {"b": {"x": 1}, "c": {"x": 1}}}


def test_a_decision_lost_with_its_process_is_made_by_recovery(user):
    """The statement that brought the count to 0 committed, and the process died before the
    decision: the recovery pass finds the join pending at 0 and queues it, once."""
    wf = diamond(user)
    with PrivateBroker():
        execution, _ = execution_create(workflow=wf, input={"x": 1})
        assert run("a", execution, pure=True) == "succeeded"
        for key in ("b", "c"):
            done, _, queued, counted = end_hop(execution, key, output={key: True}, joins=["join"])
            assert done and queued == []
        assert counted == {"join": 0}
        assert left(execution) == ("pending", 0)  # nobody decided it
        report = recovery_run()
        assert report.joins_decided == 1
        assert left(execution) == ("queued", 0)
        assert recovery_run().joins_decided == 0  # decided once
        assert run("join", execution, pure=True) == "succeeded"
    execution.refresh_from_db()
    assert execution.status == "succeeded"
    assert execution.output == {"join": {"b": {"b": True}, "c": {"c": True}}}


def test_a_join_that_all_predecessors_skip_is_skipped_by_recovery_too(user):
    """At 0 with no connection fired (both predecessors failed into error routes elsewhere):
    the decision is a skip, and the execution completes."""
    wf = make_workflow(
        user,
        [node("a"), node("b"), node("c"), node("join"), node("eb"), node("ec")],
        [
            edge("a", "b"),
            edge("a", "c"),
            edge("b", "join"),
            edge("c", "join"),
            edge("b", "eb", type="error"),
            edge("c", "ec", type="error"),
        ],
    )
    with PrivateBroker():
        execution, _ = execution_create(workflow=wf, input={})
        assert run("a", execution, pure=True) == "succeeded"
        for key in ("b", "c"):
            done, _, queued, counted = end_hop(
                execution,
                key,
                status="failed",
                error={"message": "no"},
                successors=[(f"e{key}", f"t-e{key}")],
                joins=["join"],
            )
            assert done and queued == [(f"e{key}", f"t-e{key}")]
        assert left(execution) == ("pending", 0)
        assert recovery_run().joins_decided == 1
        assert left(execution) == ("skipped", 0)
        for key in ("eb", "ec"):
            assert run(key, execution, pure=True) == "succeeded"
    execution.refresh_from_db()
    assert execution.status == "succeeded"


def test_an_unpause_recounts_what_finished_while_paused(user):
    """b ends while the execution is paused: its end counts nothing down (the execution is
    not active). The unpause counts the join's unfinished predecessors anew, so c's end
    brings it to 0 and queues it."""
    wf = diamond(user, middle_type="test_behave")
    with PrivateBroker():
        execution, _ = execution_create(workflow=wf, input={"x": 1})
        assert run("a", execution, pure=True) == "succeeded"
        claimed = store.node_run_claim(
            execution_id=str(execution.id),
            node="b",
            task_id="t-b",
            now=timezone.now(),
            lease=timezone.now() + timedelta(minutes=1),
            not_before=timezone.now(),
        )
        assert claimed is not None
        execution_pause(execution=Execution.objects.get(id=execution.id))
        done, status, _, counted = end_hop(
            execution, "b", output={"b": 1}, joins=["join"], pure=False
        )
        assert (done, status, counted) == (True, "paused", {})
        assert left(execution) == ("pending", 2)  # b's end counted nothing down
        execution_unpause(execution=Execution.objects.get(id=execution.id))
        assert left(execution) == ("pending", 1)  # recounted: only c is left
        assert run("c", execution, pure=False) == "succeeded"
        assert left(execution) == ("queued", 0)
        assert run("join", execution, pure=True) == "succeeded"
    execution.refresh_from_db()
    assert execution.status == "succeeded"
    assert execution.output == {"join": {"b": {"b": 1}, "c": {"x": 1}}}


def test_a_join_without_a_count_is_decided_the_older_way(user):
    """A run created before joins were counted keeps no count: its predecessors find it
    uncounted and decide it under its row lock once every predecessor has finished."""
    wf = diamond(user)
    with PrivateBroker():
        execution, _ = execution_create(workflow=wf, input={"x": 1})
        NodeRun.objects.filter(execution=execution, node="join").update(predecessors_left=None)
        for key in ("a", "b"):
            assert run(key, execution, pure=True) == "succeeded"
        assert left(execution) == ("pending", None)
        assert run("c", execution, pure=False) == "succeeded"
        assert left(execution) == ("queued", None)
        assert run("join", execution, pure=True) == "succeeded"
    execution.refresh_from_db()
    assert execution.status == "succeeded"
