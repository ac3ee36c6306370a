"""Retries on by default, as in the engine WeConnect replaces: 3 retries after 1 s, 2 s and
4 s, no jitter. A workflow's ``retry`` changes the default of its nodes, a node's its own; GET
shows the policy in force on every node, and that is what the worker applies."""

from __future__ import annotations

import pytest

from executions.services.executions import execution_create
from tests.support.workflows import make_workflow, node, runs_by_node, wait_for, workflow_doc

DEFAULT = {"max_retries": 3, "backoff_seconds": 1.0, "max_backoff_seconds": 60.0, "jitter": False}


def create(api, nodes, **extra) -> dict:
    response = api.post("/api/workflows/", workflow_doc(nodes, **extra), format="json")
    assert response.status_code == 201, response.json()
    return response.json()


@pytest.mark.django_db
def test_get_shows_the_default_policy_on_every_node(api):
    body = create(api, [node("a"), node("b")])
    got = api.get(f"/api/workflows/{body['id']}/").json()
    assert [n["retry"] for n in got["nodes"]] == [DEFAULT, DEFAULT]
    assert got["retry"] == DEFAULT


@pytest.mark.django_db
def test_workflow_and_node_levels_change_the_fields_they_name(api):
    body = create(
        api,
        [
            node("inherits"),
            node("single", retry={"max_retries": 0}),
            node("slower", retry={"backoff_seconds": 5, "jitter": True}),
        ],
        retry={"max_retries": 1, "max_backoff_seconds": 10},
    )
    policies = {n["key"]: n["retry"] for n in body["nodes"]}
    workflow_level = {**DEFAULT, "max_retries": 1, "max_backoff_seconds": 10.0}
    assert body["retry"] == workflow_level
    assert policies["inherits"] == workflow_level
    assert policies["single"] == {**workflow_level, "max_retries": 0}
    assert policies["slower"] == {**workflow_level, "backoff_seconds": 5.0, "jitter": True}


@pytest.mark.django_db
def test_a_bad_retry_names_the_field(api):
    response = api.post(
        "/api/workflows/",
        workflow_doc([node("a", retry={"max_retries": 11})], retry={"jitter": "often"}),
        format="json",
    )
    assert response.status_code == 400
    errors = response.json()
    assert "max_retries" in str(errors["nodes"]) and "jitter" in errors["retry"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_a_node_without_a_policy_is_retried_after_1_and_2_seconds(worker, user):
    flaky = make_workflow(
        user, [node("flaky", "test_behave", config={"fail_attempts": 2, "output": {"ok": 1}})]
    )
    fatal = make_workflow(
        user, [node("fatal", "test_behave", config={"fail_attempts": 9, "retryable": False})]
    )
    first, _ = execution_create(workflow=flaky, input={})
    second, _ = execution_create(workflow=fatal, input={})
    run = runs_by_node(wait_for(first.id))["flaky"]
    assert run.status == "succeeded" and run.attempts == 3
    assert run.retry_delays == [1.0, 2.0]
    # Non-retryable errors stay non-retryable.
    run = runs_by_node(wait_for(second.id))["fatal"]
    assert run.status == "failed" and run.attempts == 1
