"""Exactly-once scheduling under real concurrency: many branches finishing at once into a join,
on a worker with 4 pool processes."""

from __future__ import annotations

import pytest
from django.db.models import Count, Max

from executions.models import NodeRun
from executions.services.executions import execution_create
from tests.support.workflows import edge, make_workflow, node, wait_all

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

BRANCHES = 50
EXECUTIONS = 200


@pytest.mark.parametrize(
    ("branch_type", "executions"),
    # noop branches are pure (read, run, one statement that counts the join down); test_behave
    # ones are claimed first, then end the same way.
    [("noop", EXECUTIONS), ("test_behave", EXECUTIONS // 4)],
)
def test_join_runs_exactly_once_per_execution(worker, user, branch_type, executions):
    assert worker.concurrency >= 4
    nodes = (
        [node("start")]
        + [node(f"b{i}", branch_type) for i in range(BRANCHES)]
        + [node("join", "merge")]
    )
    conns = [edge("start", f"b{i}") for i in range(BRANCHES)] + [
        edge(f"b{i}", "join") for i in range(BRANCHES)
    ]
    wf = make_workflow(user, nodes, conns)
    ids = [execution_create(workflow=wf, input={"n": i})[0].id for i in range(executions)]
    done = wait_all(ids, timeout=600)
    assert {e.status for e in done} == {"succeeded"}

    joins = NodeRun.objects.filter(execution_id__in=ids, node="join")
    assert joins.count() == executions  # one join run per execution (the unique constraint)
    assert set(joins.values_list("status", "attempts").distinct()) == {("succeeded", 1)}
    # Every branch ran exactly once as well, and the join saw all 50 inputs.
    per_node = NodeRun.objects.filter(execution_id__in=ids).aggregate(
        max_attempts=Max("attempts"), n=Count("id")
    )
    assert per_node == {"max_attempts": 1, "n": executions * (BRANCHES + 2)}
    # Every join was counted down to 0 by its 50 predecessors.
    assert set(joins.values_list("predecessors_left", flat=True)) == {0}
    for j in joins.only("input")[:20]:
        assert sorted(j.input) == sorted(f"b{i}" for i in range(BRANCHES))
