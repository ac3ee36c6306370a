"""Retries with backoff, and failures routed after the last attempt (real worker)."""

from __future__ import annotations

import pytest

from executions.services.executions import execution_create
from tests.support.workflows import edge, make_workflow, node, runs_by_node, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

RETRY = {"max_retries": 3, "backoff_seconds": 0.3, "max_backoff_seconds": 5, "jitter": False}


def test_fails_twice_then_succeeds_with_backoff(worker, user):
    wf = make_workflow(
        user,
        [
            node(
                "flaky",
                "test_behave",
                config={"fail_attempts": 2, "output": {"ok": True}},
                retry=RETRY,
            ),
            node("after"),
        ],
        [edge("flaky", "after")],
    )
    ex, _ = execution_create(workflow=wf, input={})
    ex = wait_for(ex.id)
    assert ex.status == "succeeded"
    flaky = runs_by_node(ex)["flaky"]
    assert flaky.status == "succeeded" and flaky.attempts == 3
    # delay = backoff * 2^(attempt-1): 0.3 after attempt 1, 0.6 after attempt 2.
    assert flaky.retry_delays == [0.3, 0.6]
    assert flaky.error is None  # a run that finally succeeded carries no error
    # The whole run took at least the two backoffs.
    assert (flaky.finished_at - ex.created_at).total_seconds() >= 0.9
    assert runs_by_node(ex)["after"].attempts == 1


def test_always_failing_node_ends_failed_after_all_attempts_and_routes(worker, user):
    wf = make_workflow(
        user,
        [
            node(
                "bad",
                "test_behave",
                config={"fail_attempts": 99},
                retry={**RETRY, "max_retries": 2, "backoff_seconds": 0.1},
            ),
            node("next"),
            node("on_error"),
        ],
        [edge("bad", "next"), edge("bad", "on_error", "error")],
    )
    ex, _ = execution_create(workflow=wf, input={})
    ex = wait_for(ex.id)
    runs = runs_by_node(ex)
    assert runs["bad"].status == "failed" and runs["bad"].attempts == 3
    assert runs["bad"].retry_delays == [0.1, 0.2]
    assert runs["next"].status == "skipped"
    assert runs["on_error"].status == "succeeded"
    assert runs["on_error"].input["message"] == "planned failure on attempt 3"
    assert ex.status == "succeeded"


def test_non_retryable_error_is_not_retried(worker, user):
    wf = make_workflow(
        user,
        [node("bad", "test_behave", config={"fail_attempts": 99, "retryable": False}, retry=RETRY)],
    )
    ex, _ = execution_create(workflow=wf, input={})
    ex = wait_for(ex.id)
    assert ex.status == "failed"
    assert runs_by_node(ex)["bad"].attempts == 1


def test_jitter_keeps_delays_within_the_bound():
    from executions.engine.retry import backoff_delay

    policy = {"backoff_seconds": 1.0, "max_backoff_seconds": 3.0, "jitter": True}
    for attempt in range(1, 6):
        bound = min(3.0, 2 ** (attempt - 1))
        assert backoff_delay(attempt, policy, rand=lambda: 0.999999) == pytest.approx(
            bound, rel=1e-5
        )
        assert backoff_delay(attempt, policy, rand=lambda: 0.0) == 0.0
    assert backoff_delay(3, {**policy, "jitter": False}) == 3.0
