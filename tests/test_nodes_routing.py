"""Routing and data node types end to end through the real worker: condition, switch, merge,
transform, stop_and_error, template failures and the output size limit."""

from __future__ import annotations

import pytest

from tests.support.workflows import edge, make_workflow, node, run, runs_by_node

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

RETRY = {"max_retries": 3, "backoff_seconds": 0.05, "max_backoff_seconds": 0.1, "jitter": False}


def statuses(execution) -> dict[str, str]:
    return {k: r.status for k, r in runs_by_node(execution).items()}


def test_condition_routes_and_skips_the_other_side(worker, user):
    wf = make_workflow(
        user,
        [
            node("check", "condition", config={"expression": "input.total > 100"}),
            node(
                "big", "transform", config={"fields": {"kind": "big", "total": "{{ input.total }}"}}
            ),
            node("small", "transform", config={"fields": {"kind": "small"}}),
            node("after_small"),
        ],
        [
            edge("check", "big", branch="true"),
            edge("check", "small", branch="false"),
            edge("small", "after_small"),
        ],
    )
    big, small = run(wf, {"total": 250}), run(wf, {"total": 5})
    assert big.status == small.status == "succeeded"
    assert statuses(big) == {
        "check": "succeeded",
        "big": "succeeded",
        "small": "skipped",
        "after_small": "skipped",
    }
    assert runs_by_node(big)["check"].branch == "true"
    assert big.output == {"big": {"kind": "big", "total": 250}}
    assert statuses(small) == {
        "check": "succeeded",
        "big": "skipped",
        "small": "succeeded",
        "after_small": "succeeded",
    }
    assert small.output == {"after_small": {"kind": "small"}}


def test_switch_routes_to_a_case_or_the_default(worker, user):
    cases = [
        {"name": "de", "jmespath": "input.country == 'DE'"},
        {"name": "fr", "expression": "input.country == 'FR'"},
    ]
    wf = make_workflow(
        user,
        [
            node("route", "switch", config={"cases": cases, "default": "other"}),
            node("de", "transform", config={"fields": {"vat": 19}}),
            node("fr", "transform", config={"fields": {"vat": 20}}),
            node("other", "transform", config={"fields": {"vat": 0}}),
        ],
        [
            edge("route", "de", branch="de"),
            edge("route", "fr", branch="fr"),
            edge("route", "other", branch="other"),
        ],
    )
    for country, branch, vat in (("DE", "de", 19), ("FR", "fr", 20), ("US", "other", 0)):
        ex = run(wf, {"country": country})
        assert ex.status == "succeeded", ex.error
        st = statuses(ex)
        assert st[branch] == "succeeded"
        assert all(st[b] == "skipped" for b in ("de", "fr", "other") if b != branch)
        assert runs_by_node(ex)["route"].branch == branch
        assert ex.output == {branch: {"vat": vat}}


def test_merge_after_a_condition_keys_the_one_branch_that_fired(worker, user):
    wf = make_workflow(
        user,
        [
            node("check", "condition", config={"jmespath": "input.vip"}),
            node("vip", "transform", config={"fields": {"discount": 10}}),
            node("std", "transform", config={"fields": {"discount": 0}}),
            node("join", "merge"),
            node("listed", "merge", config={"mode": "list"}),
        ],
        [
            edge("check", "vip", branch="true"),
            edge("check", "std", branch="false"),
            edge("vip", "join"),
            edge("std", "join"),
            edge("vip", "listed"),
            edge("std", "listed"),
        ],
    )
    ex = run(wf, {"vip": True})
    assert ex.status == "succeeded", ex.error
    runs = runs_by_node(ex)
    assert runs["std"].status == "skipped"
    # The engine hands a join the bare output when one predecessor fired; merge keys it anyway.
    assert runs["join"].input == {"discount": 10}
    assert runs["join"].output == {"vip": {"discount": 10}}
    assert runs["listed"].output == [{"discount": 10}]


def test_merge_of_parallel_branches_keyed_and_listed(worker, user):
    wf = make_workflow(
        user,
        [
            node("start"),
            node("b", "transform", config={"fields": {"from": "b"}}),
            node("a", "transform", config={"fields": {"from": "a"}}),
            node("c", "stop_and_error", config={"message": "c failed"}),
            node("join", "merge"),
            node("listed", "merge", config={"mode": "list"}),
        ],
        # listed's connections in the order b, a: the list follows that order.
        [
            edge("start", "b"),
            edge("start", "a"),
            edge("start", "c"),
            edge("b", "join"),
            edge("a", "join"),
            edge("c", "join", "error"),
            edge("b", "listed"),
            edge("a", "listed"),
        ],
    )
    ex = run(wf, {"x": 1})
    assert ex.status == "succeeded", ex.error
    runs = runs_by_node(ex)
    join = runs["join"].output
    assert join["a"] == {"from": "a"} and join["b"] == {"from": "b"}
    assert (
        join["c"]["error"] is True and join["c"]["message"] == "c failed"
    )  # its error connection fired
    assert runs["join"].status == "succeeded"  # an error document passed along does not fail merge
    assert runs["listed"].output == [{"from": "b"}, {"from": "a"}]


def test_stop_and_error_is_not_retried(worker, user):
    wf = make_workflow(
        user,
        [
            node(
                "stop",
                "stop_and_error",
                retry=RETRY,
                config={"message": "rejected order {{ input.id }}"},
            ),
            node("handler"),
        ],
        [edge("stop", "handler", "error")],
    )
    ex = run(wf, {"id": 17})
    assert ex.status == "succeeded"
    stop = runs_by_node(ex)["stop"]
    assert stop.status == "failed" and stop.attempts == 1 and stop.retry_delays == []
    assert runs_by_node(ex)["handler"].input == {
        "error": True,
        "message": "rejected order 17",
        "type": "StopAndError",
    }

    alone = make_workflow(
        user, [node("stop", "stop_and_error", retry=RETRY, config={"message": "no"})]
    )
    failed = run(alone)
    assert failed.status == "failed" and runs_by_node(failed)["stop"].attempts == 1
    assert failed.error["node"] == "stop"


def test_template_errors_fail_the_node_without_retry(worker, user):
    wf = make_workflow(
        user,
        [
            node(
                "t",
                "transform",
                retry=RETRY,
                config={"fields": {"id": "{{ input.order.no_such_key }}"}},
            )
        ],
    )
    ex = run(wf, {"order": {"id": 1}})
    assert ex.status == "failed"
    t = runs_by_node(ex)["t"]
    assert t.attempts == 1 and t.error["type"] == "TemplateError"
    assert "no_such_key" in t.error["message"]

    sandbox = make_workflow(
        user, [node("t", "transform", retry=RETRY, config={"fields": {"c": "{{ ''.__class__ }}"}})]
    )
    ex = run(sandbox)
    t = runs_by_node(ex)["t"]
    assert ex.status == "failed" and t.attempts == 1
    assert "unsafe" in t.error["message"] and "__class__" in t.error["message"]


def test_templates_see_upstream_nodes_and_execution_input(worker, user):
    wf = make_workflow(
        user,
        [
            node("fetch", "transform", config={"fields": {"id": 5, "tags": ["a", "b"]}}),
            node("mid"),
            node(
                "use",
                "transform",
                config={
                    "fields": {
                        "id": "{{ nodes.fetch.id }}",
                        "first": {"jmespath": "nodes.fetch.tags[0]"},
                        "who": "{{ execution.input.user }}",
                        "exec": "{{ execution_id }}",
                    }
                },
            ),
        ],
        [edge("fetch", "mid"), edge("mid", "use")],
    )
    ex = run(wf, {"user": "ann"})
    assert ex.status == "succeeded", ex.error
    assert runs_by_node(ex)["use"].output == {
        "id": 5,
        "first": "a",
        "who": "ann",
        "exec": str(ex.id),
    }


def test_output_over_the_limit_fails_the_node(worker, user, settings):
    limit = settings.WECONNECT_MAX_OUTPUT_BYTES
    wf = make_workflow(
        user,
        [
            node(
                "big",
                "transform",
                retry=RETRY,
                config={"fields": {"blob": f"{{{{ 'x' * {limit + 10} }}}}"}},
            )
        ],
    )
    ex = run(wf)
    assert ex.status == "failed"
    big = runs_by_node(ex)["big"]
    assert big.attempts == 1 and big.error["type"] == "OutputTooLarge"
    assert "WECONNECT_MAX_OUTPUT_BYTES" in big.error["message"]
