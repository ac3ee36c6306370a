"""Workflow validation through POST /api/workflows/: every rule answers 400 naming the field
and the reason (all problems of a document at once), never 500; plus the pure cycle finder."""

from __future__ import annotations

import json

import pytest
from django.test import override_settings

from executions.graph import find_cycle
from executions.models import Workflow
from tests.support.workflows import edge, node, workflow_doc

pytestmark = pytest.mark.django_db

URL = "/api/workflows/"


def post(api, doc):
    return api.post(URL, doc, format="json")


def errors_of(response) -> dict:
    assert response.status_code == 400, (response.status_code, response.content[:500])
    return response.json()


def chain(keys: list[str]) -> list[dict]:
    return [edge(a, b) for a, b in zip(keys, keys[1:], strict=False)]


# --- Graph rules -----------------------------------------------------------------------------


def test_a_valid_diamond_is_accepted(api):
    doc = workflow_doc(
        [node("a"), node("b"), node("c"), node("d")],
        [edge("a", "b"), edge("a", "c"), edge("b", "d"), edge("c", "d")],
    )
    response = post(api, doc)
    assert response.status_code == 201, response.json()
    assert [n["key"] for n in response.json()["nodes"]] == ["a", "b", "c", "d"]


def test_duplicate_node_keys(api):
    errors = errors_of(post(api, workflow_doc([node("a"), node("b"), node("a")])))
    assert errors["nodes"] == ["node 2 ('a'): duplicate key 'a'"]


def test_unknown_node_type(api):
    errors = errors_of(post(api, workflow_doc([node("a", "does_not_exist")])))
    assert errors["nodes"] == ["node 'a': unknown type 'does_not_exist'"]


def test_config_must_fit_the_type_schema(api):
    doc = workflow_doc([node("a", "test_behave", config={"fail_attempts": -1, "color": "red"})])
    problems = errors_of(post(api, doc))["nodes"]
    assert any(
        p.startswith("node 'a': config['fail_attempts']: -1 is less than the minimum of 0")
        for p in problems
    )
    assert any("node 'a'" in p and "'color'" in p and "not allowed" in p for p in problems), (
        problems
    )


def test_config_that_fits_is_accepted(api):
    doc = workflow_doc([node("a", "test_behave", config={"fail_attempts": 1, "output": {"x": 1}})])
    assert post(api, doc).status_code == 201


def test_connection_to_a_missing_node(api):
    errors = errors_of(
        post(api, workflow_doc([node("a")], [edge("a", "ghost"), edge("nowhere", "a")]))
    )
    assert errors["connections"] == [
        "connection 0 (a -> ghost, success): target 'ghost' is not a node of this workflow",
        "connection 1 (nowhere -> a, success): source 'nowhere' is not a node of this workflow",
    ]


def test_self_loop(api):
    errors = errors_of(post(api, workflow_doc([node("a")], [edge("a", "a")])))
    assert errors["connections"] == [
        "connection 0 (a -> a, success): a node cannot connect to itself"
    ]


def test_duplicate_connection(api):
    doc = workflow_doc(
        [node("a"), node("b")], [edge("a", "b"), edge("a", "b", "error"), edge("a", "b")]
    )
    errors = errors_of(post(api, doc))
    assert errors["connections"] == ["connection 2 (a -> b, success): duplicates connection 0"]


def test_same_pair_with_different_branches_is_not_a_duplicate(api):
    doc = workflow_doc(
        [node("a"), node("b")], [edge("a", "b", branch="x"), edge("a", "b", branch="y")]
    )
    assert post(api, doc).status_code == 201


def test_error_connection_cannot_carry_a_branch(api):
    doc = workflow_doc([node("a"), node("b")], [edge("a", "b", "error", branch="x")])
    errors = errors_of(post(api, doc))
    assert errors["connections"] == [
        "connection 0 (a -> b, error [x]): only success connections can carry a branch"
    ]


def test_a_workflow_needs_a_node(api):
    errors = errors_of(post(api, workflow_doc([])))
    assert errors["nodes"] == ["a workflow needs at least one node"]


def test_nodes_are_required(api):
    errors = errors_of(post(api, {"name": "no nodes"}))
    assert errors["nodes"] == ["This field is required."]


def test_cycle_of_two(api):
    errors = errors_of(
        post(api, workflow_doc([node("a"), node("b")], [edge("a", "b"), edge("b", "a")]))
    )
    assert errors["connections"] == ["cycle: a -> b -> a"]


def test_cycle_of_three_names_its_nodes_in_order(api):
    doc = workflow_doc(
        [node("start"), node("a"), node("b"), node("c")],
        [edge("start", "a"), edge("a", "b"), edge("b", "c"), edge("c", "a")],
    )
    assert errors_of(post(api, doc))["connections"] == ["cycle: a -> b -> c -> a"]


def test_long_cycle(api):
    keys = [f"n{i}" for i in range(30)]
    doc = workflow_doc([node(k) for k in keys], chain(keys) + [edge("n29", "n0")])
    message = errors_of(post(api, doc))["connections"][0]
    assert message == "cycle: " + " -> ".join(keys + ["n0"])


def test_cycle_in_a_second_component(api):
    doc = workflow_doc(
        [node("a"), node("b"), node("x"), node("y"), node("z")],
        [edge("a", "b"), edge("x", "y"), edge("y", "z"), edge("z", "y")],
    )
    assert errors_of(post(api, doc))["connections"] == ["cycle: y -> z -> y"]


def test_cycle_through_an_error_connection(api):
    doc = workflow_doc([node("a"), node("b")], [edge("a", "b"), edge("b", "a", "error")])
    assert errors_of(post(api, doc))["connections"] == ["cycle: a -> b -> a"]


def test_all_problems_are_reported_at_once(api):
    doc = workflow_doc(
        [node("a"), node("a"), node("b", "nope"), node("c"), node("d")],
        [edge("a", "ghost"), edge("c", "d"), edge("d", "c")],
    )
    errors = errors_of(post(api, doc))
    assert errors["nodes"] == ["node 1 ('a'): duplicate key 'a'", "node 'b': unknown type 'nope'"]
    assert errors["connections"] == [
        "connection 0 (a -> ghost, success): target 'ghost' is not a node of this workflow",
        "cycle: c -> d -> c",
    ]
    assert not Workflow.objects.exists()


def test_field_errors_of_several_nodes_at_once(api):
    doc = workflow_doc(
        [
            node("ok"),
            node("bad key!"),
            node("x" * 65),
            {"key": "t", "type": "noop", "timeout_seconds": 0},
        ]
    )
    errors = errors_of(post(api, doc))["nodes"]
    # Items are keyed by their index; valid items are left out.
    assert sorted(errors) == ["1", "2", "3"]
    assert "key" in errors["1"] and "key" in errors["2"] and "timeout_seconds" in errors["3"]


def test_replace_is_validated_the_same_way(api):
    created = post(api, workflow_doc([node("a"), node("b")], [edge("a", "b")])).json()
    response = api.put(
        f"{URL}{created['id']}/",
        workflow_doc([node("a"), node("b")], [edge("a", "b"), edge("b", "a")]),
        format="json",
    )
    assert errors_of(response)["connections"] == ["cycle: a -> b -> a"]
    assert Workflow.objects.get(id=created["id"]).version == 1


# --- Field rules -----------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["has space", "dot.ted", "slash/", "", "ünïcode", "semi;colon"])
def test_bad_key_characters(api, key):
    errors = errors_of(post(api, workflow_doc([node(key)])))
    assert "key" in errors["nodes"]["0"], errors


def test_key_of_64_is_accepted_and_65_is_not(api):
    assert post(api, workflow_doc([node("k" * 64)])).status_code == 201
    errors = errors_of(post(api, workflow_doc([node("k" * 65)])))
    assert "key" in errors["nodes"]["0"]


def test_name_longer_than_200(api):
    errors = errors_of(post(api, workflow_doc([node("a")], name="n" * 201)))
    assert errors["name"] == ["Ensure this field has no more than 200 characters."]
    assert post(api, workflow_doc([node("a")], name="n" * 200)).status_code == 201


def test_name_is_required(api):
    errors = errors_of(post(api, {"nodes": [node("a")]}))
    assert errors["name"] == ["This field is required."]


@pytest.mark.parametrize(
    "value,message",
    [
        (0, "Ensure this value is greater than or equal to 1."),
        (86401, "Ensure this value is less than or equal to 86400."),
        ("soon", "A valid integer is required."),
    ],
)
def test_workflow_timeout_seconds_bounds(api, value, message):
    errors = errors_of(post(api, workflow_doc([node("a")], timeout_seconds=value)))
    assert errors["timeout_seconds"] == [message]


def test_node_timeout_above_half_the_visibility_timeout(api, settings):
    limit = settings.WECONNECT_MAX_NODE_TIMEOUT
    assert post(api, workflow_doc([node("a", timeout_seconds=limit)])).status_code == 201
    errors = errors_of(post(api, workflow_doc([node("a", timeout_seconds=limit + 1)])))
    assert errors["nodes"]["0"]["timeout_seconds"] == [
        f"must be at most {limit} (half the broker visibility timeout)"
    ]


def test_max_retries_above_10(api):
    errors = errors_of(post(api, workflow_doc([node("a", retry={"max_retries": 11})])))
    assert errors["nodes"]["0"]["retry"]["max_retries"] == [
        "Ensure this value is less than or equal to 10."
    ]


def test_negative_backoff(api):
    errors = errors_of(post(api, workflow_doc([node("a", retry={"backoff_seconds": -1})])))
    assert "backoff_seconds" in errors["nodes"]["0"]["retry"]


def test_connection_type_bogus(api):
    errors = errors_of(post(api, workflow_doc([node("a"), node("b")], [edge("a", "b", "bogus")])))
    assert errors["connections"]["0"]["type"] == ['"bogus" is not a valid choice.']


# --- Bodies that are not workflow documents --------------------------------------------------


@pytest.mark.parametrize("body", ["[]", "[1, 2]", '"a string"', "42", "null", "true"])
def test_non_object_json_bodies(api, body):
    response = api.post(URL, body, content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"non_field_errors": ["expected a JSON object"]}


@pytest.mark.parametrize("body", ["{", '{"name": }', "{'single': 'quotes'}", "\x00\x01"])
def test_malformed_json(api, body):
    response = api.post(URL, body, content_type="application/json")
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]


def test_oversized_body_is_413(api):
    with override_settings(WECONNECT_MAX_REQUEST_BYTES=4096):
        big = workflow_doc([node("a")], description="x" * 5000)
        response = api.post(URL, json.dumps(big), content_type="application/json")
        assert response.status_code == 413
        assert "exceeds the limit of 4096 bytes" in response.json()["detail"]
        assert post(api, workflow_doc([node("a")], description="x" * 2000)).status_code == 201


def test_body_over_the_default_limit_is_413(api, settings):
    body = json.dumps(
        workflow_doc([node("a")], description="x" * settings.WECONNECT_MAX_REQUEST_BYTES)
    )
    response = api.post(URL, body, content_type="application/json")
    assert response.status_code == 413
    assert not Workflow.objects.exists()


@pytest.mark.parametrize(
    "doc,field",
    [
        ({"name": "w", "nodes": "x"}, "nodes"),
        ({"name": "w", "nodes": {"key": "a"}}, "nodes"),
        ({"name": "w", "nodes": [1, "two"]}, "nodes"),
        ({"name": "w", "nodes": [{"key": "a", "type": "noop", "config": "x"}]}, "nodes"),
        ({"name": "w", "nodes": [{"key": "a", "type": "noop", "config": [1]}]}, "nodes"),
        ({"name": "w", "nodes": [{"key": "a", "type": "noop", "retry": "fast"}]}, "nodes"),
        ({"name": "w", "nodes": [{"key": 5, "type": ["noop"]}]}, "nodes"),
        ({"name": "w", "nodes": [{"key": None, "type": None}]}, "nodes"),
        ({"name": "w", "nodes": [node("a")], "connections": "x"}, "connections"),
        ({"name": "w", "nodes": [node("a")], "connections": [None]}, "connections"),
        (
            {"name": "w", "nodes": [node("a")], "connections": [{"source": {}, "target": []}]},
            "connections",
        ),
        ({"name": ["w"], "nodes": [node("a")]}, "name"),
        ({"name": "w", "nodes": [node("a")], "is_active": "maybe"}, "is_active"),
        ({"name": "w", "nodes": [node("a")], "timeout_seconds": None}, "timeout_seconds"),
        ({"name": "w", "nodes": [node("a")], "description": None}, "description"),
    ],
)
def test_wrong_types_are_400_naming_the_field(api, doc, field):
    errors = errors_of(post(api, doc))
    assert field in errors, errors


def test_too_many_nodes(api):
    errors = errors_of(post(api, workflow_doc([node(f"n{i}") for i in range(1001)])))
    assert "nodes" in errors


# --- find_cycle (pure) -----------------------------------------------------------------------


def test_find_cycle_none_for_acyclic_graphs():
    assert find_cycle([], []) is None
    assert find_cycle(["a"], []) is None
    assert find_cycle("abcd", [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]) is None
    keys = [f"n{i}" for i in range(5000)]
    assert find_cycle(keys, list(zip(keys, keys[1:], strict=False))) is None


def test_find_cycle_returns_a_closed_path():
    assert find_cycle("ab", [("a", "b"), ("b", "a")]) == ["a", "b", "a"]
    assert find_cycle("sabc", [("s", "a"), ("a", "b"), ("b", "c"), ("c", "a")]) == [
        "a",
        "b",
        "c",
        "a",
    ]
    assert find_cycle("a", [("a", "a")]) == ["a", "a"]


def test_find_cycle_long_chain_without_recursion_limit():
    keys = [f"n{i}" for i in range(5000)]
    edges = list(zip(keys, keys[1:], strict=False)) + [(keys[-1], keys[0])]
    cycle = find_cycle(keys, edges)
    assert cycle == keys + ["n0"]


def test_find_cycle_in_a_second_component_and_ignores_unknown_nodes():
    assert find_cycle("abxy", [("a", "b"), ("x", "y"), ("y", "x")]) == ["x", "y", "x"]
    assert find_cycle("ab", [("a", "ghost"), ("ghost", "a"), ("a", "b")]) is None


def test_find_cycle_is_stable_for_the_order_given():
    edges = [("a", "b"), ("b", "a"), ("c", "d"), ("d", "c")]
    assert find_cycle("abcd", edges) == ["a", "b", "a"]
    assert find_cycle("cdab", edges) == ["c", "d", "c"]
