"""The routing semantics, end to end through a real worker process."""

from __future__ import annotations

import pytest

from tests.support.workflows import edge, make_workflow, node, run, runs_by_node

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def statuses(execution) -> dict[str, str]:
    return {k: r.status for k, r in runs_by_node(execution).items()}


def test_linear(worker, user):
    wf = make_workflow(user, [node("a"), node("b"), node("c")], [edge("a", "b"), edge("b", "c")])
    ex = run(wf, {"x": 1})
    assert ex.status == "succeeded"
    assert statuses(ex) == {"a": "succeeded", "b": "succeeded", "c": "succeeded"}
    assert ex.output == {"c": {"x": 1}}
    runs = runs_by_node(ex)
    assert runs["b"].input == {"x": 1} and runs["c"].attempts == 1
    assert ex.started_at and ex.finished_at and ex.finished_at >= ex.started_at


def test_diamond_join_gets_both_inputs(worker, user):
    wf = make_workflow(
        user,
        [
            node("a"),
            node("b", "test_behave", config={"output": {"from": "b"}}),
            node("c", "test_behave", config={"output": {"from": "c"}}),
            node("d"),
        ],
        [edge("a", "b"), edge("a", "c"), edge("b", "d"), edge("c", "d")],
    )
    ex = run(wf, {"x": 1})
    assert ex.status == "succeeded"
    d = runs_by_node(ex)["d"]
    assert d.input == {"b": {"from": "b"}, "c": {"from": "c"}}
    assert d.attempts == 1
    assert ex.output == {"d": {"b": {"from": "b"}, "c": {"from": "c"}}}


def test_error_branch_handles_failure(worker, user):
    wf = make_workflow(
        user,
        [
            node("a"),
            node("boom", "test_behave", config={"fail_attempts": 99, "retryable": False}),
            node("ok"),
            node("handler"),
        ],
        [edge("a", "boom"), edge("boom", "ok"), edge("boom", "handler", "error")],
    )
    ex = run(wf)
    assert ex.status == "succeeded", (ex.error, statuses(ex))
    assert statuses(ex) == {
        "a": "succeeded",
        "boom": "failed",
        "ok": "skipped",
        "handler": "succeeded",
    }
    handler_input = runs_by_node(ex)["handler"].input
    assert handler_input["error"] is True and handler_input["type"] == "NodeError"
    assert ex.output == {"handler": handler_input}


def test_error_output_takes_error_branch(worker, user):
    wf = make_workflow(
        user,
        [
            node("call", "test_behave", config={"output": {"statusCode": 404, "body": "nope"}}),
            node("ok"),
            node("on_error"),
        ],
        [edge("call", "ok"), edge("call", "on_error", "error")],
    )
    ex = run(wf)
    assert ex.status == "succeeded"
    assert statuses(ex) == {"call": "failed", "ok": "skipped", "on_error": "succeeded"}
    assert runs_by_node(ex)["on_error"].input == {"statusCode": 404, "body": "nope"}


def test_skip_propagates_through_chain_and_join(worker, user):
    # route picks "left": the right chain is skipped, and the join runs with the left input only.
    wf = make_workflow(
        user,
        [
            node("route", "test_behave", config={"branch": "left", "output": {"v": 1}}),
            node("l1"),
            node("r1"),
            node("r2"),
            node("join"),
        ],
        [
            edge("route", "l1", branch="left"),
            edge("route", "r1", branch="right"),
            edge("r1", "r2"),
            edge("l1", "join"),
            edge("r2", "join"),
        ],
    )
    ex = run(wf)
    assert ex.status == "succeeded"
    assert statuses(ex) == {
        "route": "succeeded",
        "l1": "succeeded",
        "r1": "skipped",
        "r2": "skipped",
        "join": "succeeded",
    }
    assert runs_by_node(ex)["join"].input == {"v": 1}


def test_all_skipped_join_is_skipped(worker, user):
    wf = make_workflow(
        user,
        [node("route", "test_behave", config={"branch": "none"}), node("x"), node("y"), node("z")],
        [
            edge("route", "x", branch="a"),
            edge("route", "y", branch="b"),
            edge("x", "z"),
            edge("y", "z"),
        ],
    )
    ex = run(wf)
    assert ex.status == "succeeded"
    assert statuses(ex) == {"route": "succeeded", "x": "skipped", "y": "skipped", "z": "skipped"}
    assert ex.output == {}


def test_unhandled_failure_fails_execution_and_cancels_the_rest(worker, user):
    wf = make_workflow(
        user,
        [
            node("a"),
            node("boom", "test_behave", config={"fail_attempts": 99, "retryable": False}),
            node("slow", "test_behave", config={"sleep": 1.5}),
            node("after_boom"),
            node("after_slow"),
            node("join"),
        ],
        [
            edge("a", "boom"),
            edge("a", "slow"),
            edge("boom", "after_boom"),
            edge("slow", "after_slow"),
            edge("after_boom", "join"),
            edge("after_slow", "join"),
        ],
    )
    ex = run(wf)
    assert ex.status == "failed"
    assert ex.error["node"] == "boom"
    st = statuses(ex)
    assert st["boom"] == "failed"
    assert st["after_boom"] == "cancelled" and st["join"] == "cancelled"
    # slow, if it had started, may finish, but it schedules nothing (if it had not started
    # yet it was cancelled with the rest).
    import time

    time.sleep(2)
    ex = type(ex).objects.get(id=ex.id)
    st = statuses(ex)
    assert ex.status == "failed"
    assert st["slow"] in ("succeeded", "running", "cancelled")
    assert st["after_slow"] == "cancelled"
    assert runs_by_node(ex)["after_slow"].started_at is None
