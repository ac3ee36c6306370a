"""Engine pieces checked directly against the real Postgres and Redis (no worker)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from executions.engine.recovery import recovery_run
from executions.graph import Edge, Graph, NodeSpec, Outcome, decide, find_cycle, is_error_output
from executions.models import Execution, NodeRun
from executions.services.executions import execution_create
from executions.states import NODE_RUN_TRANSITIONS
from executions.store.transition import transition
from tests.support.workflows import edge, make_workflow, node


def test_decide_waits_runs_and_skips():
    g = Graph(
        [NodeSpec("a", "noop"), NodeSpec("b", "noop"), NodeSpec("j", "noop")],
        [Edge("a", "j"), Edge("b", "j", "error")],
    )
    assert decide(g, "j", {"a": Outcome("succeeded")}) == ("wait", [])
    assert decide(g, "j", {"a": Outcome("succeeded"), "b": Outcome("succeeded")}) == ("run", ["a"])
    assert decide(g, "j", {"a": Outcome("failed"), "b": Outcome("succeeded")}) == ("skip", [])
    assert decide(g, "j", {"a": Outcome("succeeded"), "b": Outcome("failed")}) == (
        "run",
        ["a", "b"],
    )
    assert decide(g, "j", {"a": Outcome("skipped"), "b": Outcome("skipped")}) == ("skip", [])


def test_branch_connections_fire_only_for_their_branch():
    g = Graph(
        [NodeSpec("r", "condition"), NodeSpec("t", "noop"), NodeSpec("f", "noop")],
        [Edge("r", "t", branch="true"), Edge("r", "f", branch="false")],
    )
    out = Outcome("succeeded", "true", {})
    assert decide(g, "t", {"r": out})[0] == "run"
    assert decide(g, "f", {"r": out})[0] == "skip"


@pytest.mark.parametrize(
    "output,expected",
    [
        ({"error": True}, True),
        ({"success": False}, True),
        ({"status": "failed"}, True),
        ({"statusCode": 404}, True),
        ({"status_code": 500}, True),
        ({"statusCode": 399}, False),
        ({"error": False, "success": True, "status": "ok", "statusCode": 200}, False),
        ({"statusCode": True}, False),
        ([{"error": True}], False),
        ("error", False),
        (None, False),
    ],
)
def test_error_convention(output, expected):
    assert is_error_output(output) is expected


def test_find_cycle_reports_a_closed_path():
    assert find_cycle("abc", [("a", "b"), ("b", "c"), ("c", "a")]) == ["a", "b", "c", "a"]
    assert find_cycle("abcd", [("a", "b"), ("b", "c"), ("a", "c"), ("c", "d")]) is None
    long = [str(i) for i in range(500)]
    chain = list(zip(long, long[1:], strict=False))
    assert find_cycle(long, chain) is None  # no recursion limit on long chains
    assert find_cycle(long, [*chain, ("499", "250")]) == [str(i) for i in range(250, 500)] + ["250"]


def test_transition_table_refuses_leaving_a_terminal_state():
    with pytest.raises(ValueError):
        transition(
            NodeRun.objects.none(), "running", table=NODE_RUN_TRANSITIONS, sources=["succeeded"]
        )


@pytest.mark.django_db(transaction=True)
def test_terminal_states_stay_terminal(user):
    wf = make_workflow(user, [node("a")])
    ex, _ = execution_create(workflow=wf, input={})
    run = NodeRun.objects.get(execution=ex)
    NodeRun.objects.filter(id=run.id).update(status="succeeded")
    for target in ("queued", "running", "cancelled", "failed", "skipped"):
        assert (
            transition(NodeRun.objects.filter(id=run.id), target, table=NODE_RUN_TRANSITIONS) == 0
        )
    assert NodeRun.objects.get(id=run.id).status == "succeeded"


@pytest.mark.django_db(transaction=True)
def test_lease_expiry_reclaims_then_fails_at_the_reassignment_cap(user, settings):
    # Messages go to a broker with no worker, so only this test moves the run.
    from tests.support.broker import PrivateBroker

    with PrivateBroker():
        _lease_expiry_reclaims_then_fails_at_the_reassignment_cap(user, settings)


def _lease_expiry_reclaims_then_fails_at_the_reassignment_cap(user, settings):
    settings.WECONNECT_MAX_REASSIGNMENTS = 2
    wf = make_workflow(user, [node("a"), node("b")], [edge("a", "b")])
    ex, _ = execution_create(workflow=wf, input={})
    past = timezone.now() - timedelta(seconds=5)
    NodeRun.objects.filter(execution=ex, node="a").update(
        status="running", attempts=1, started_at=past, lease_expires_at=past, reassignments=1
    )
    Execution.objects.filter(id=ex.id).update(status="running")
    report = recovery_run()
    assert report.reclaimed == 1 and report.lost == 0
    run = NodeRun.objects.get(execution=ex, node="a")
    assert run.status == "queued" and run.reassignments == 2 and run.attempts == 1

    NodeRun.objects.filter(id=run.id).update(status="running", attempts=2, lease_expires_at=past)
    report = recovery_run()
    assert report.lost == 1
    run.refresh_from_db()
    assert run.status == "failed" and run.output["type"] == "WorkerLost"
    ex.refresh_from_db()
    assert ex.status == "failed"  # no error connection: unhandled
    assert NodeRun.objects.get(execution=ex, node="b").status == "cancelled"


@pytest.mark.django_db(transaction=True)
def test_recovery_times_out_executions_past_their_deadline(user):
    from tests.support.broker import PrivateBroker

    with PrivateBroker():
        _recovery_times_out(user)


def _recovery_times_out(user):
    wf = make_workflow(user, [node("a")])
    ex, _ = execution_create(workflow=wf, input={})
    Execution.objects.filter(id=ex.id).update(deadline_at=timezone.now() - timedelta(seconds=1))
    assert recovery_run().timed_out == 1
    ex.refresh_from_db()
    assert ex.status == "timed_out"
    assert NodeRun.objects.get(execution=ex).status == "cancelled"
    assert recovery_run().timed_out == 0


@pytest.mark.django_db(transaction=True)
def test_wake_during_run_makes_the_park_resume_at_once(user):
    """A sub-workflow may finish before its parent node has parked: the wake leaves a mark on
    the running row and the park step makes the run due now instead of waiting."""
    from executions.engine.execute import claim
    from executions.engine.outcome import park
    from executions.engine.snapshots import graph_for
    from executions.nodes import Wait
    from executions.services.executions import node_run_wake
    from tests.support.broker import PrivateBroker

    wf = make_workflow(user, [node("a")])
    with PrivateBroker():  # no worker may claim the run before this test does
        ex, _ = execution_create(workflow=wf, input={})
    now = timezone.now()
    run = claim(str(ex.id), "a", "t-1", False, now)
    assert run is not None and run.attempts == 1
    assert node_run_wake(node_run_id=run.id) is False  # still running: only marked
    far = now + timedelta(hours=1)
    assert (
        park(run.execution, graph_for(run.execution.snapshot_id), run, 1, Wait(until=far), {})
        == "waiting"
    )
    parked = NodeRun.objects.get(id=run.id)
    assert parked.status == "queued" and parked.attempts == 0
    assert parked.next_attempt_at <= timezone.now()  # due now, not in an hour


def test_outputs_postgres_cannot_store_are_refused():
    from executions.engine.execute import check_output
    from executions.nodes import NodeError

    for bad in ({"x": float("nan")}, {"x": "a\x00b"}, {"x": object()}):
        with pytest.raises(NodeError) as info:
            check_output(bad)
        assert info.value.retryable is False
    check_output({"x": "a literal \\u0000 is fine"})
