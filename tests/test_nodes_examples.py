"""The example workflows in examples/ validate as the API would, and their expressions do what
their descriptions say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from executions.api.serializers import WorkflowInputSerializer
from executions.graph import NodeSpec
from executions.nodes import Context, NonRetryableError, Result, get_node_type

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
OURS = [
    "http-with-retry.json",
    "routing.json",
    "delay-and-merge.json",
    "nightly-report.json",
    "refund-approval.json",
]


def load(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text())


@pytest.mark.parametrize("name", OURS)
def test_example_validates(name):
    serializer = WorkflowInputSerializer(data=load(name))
    assert serializer.is_valid(), serializer.errors


def run_node(doc: dict, key: str, input, execution_input=None):
    spec = next(n for n in doc["nodes"] if n["key"] == key)
    ctx = Context(
        execution_id="e",
        node_run_id=1,
        workflow_id="w",
        owner_id=1,
        node=NodeSpec(key, spec["type"], config=spec.get("config", {})),
        input=input,
        execution_input=execution_input if execution_input is not None else input,
        attempt=1,
        depth=0,
        state=None,
    )
    return get_node_type(spec["type"]).run(ctx)


def test_routing_example_expressions():
    doc = load("routing.json")
    small = {"id": 1, "total": 20, "items": [1], "country": "AT"}
    assert run_node(doc, "is_large", small) == Result(small, "false")
    assert run_node(doc, "is_large", {**small, "total": 5000}).branch == "true"
    assert run_node(doc, "is_large", {**small, "items": list(range(51))}).branch == "true"
    assert run_node(doc, "warehouse", small).branch == "berlin"
    assert run_node(doc, "warehouse", {**small, "country": "BE"}).branch == "lyon"
    assert run_node(doc, "warehouse", {**small, "country": "JP"}).branch == "central"


def test_http_example_templates():
    doc = load("http-with-retry.json")
    response = {
        "statusCode": 200,
        "body": {
            "invoices": [
                {"amount_due": 10, "due_date": "2026-02-01"},
                {"amount_due": 5.5, "due_date": "2026-01-01"},
            ]
        },
    }
    summary = run_node(doc, "summary", response, {"customer_id": 3})
    assert summary == {
        "customer_id": 3,
        "open_invoices": 2,
        "total_due": 15.5,
        "oldest": "2026-01-01",
    }
    error_output = {"statusCode": 404, "headers": {}, "body": None}
    explained = run_node(doc, "explain", error_output, {"customer_id": 3})
    assert explained == {"customer_id": 3, "status": 404, "message": "HTTP 404"}
    timed_out = {"error": True, "message": "GET ... timed out after 10s", "type": "Timeout"}
    explained = run_node(doc, "explain", timed_out, {"customer_id": 3})
    assert explained == {"customer_id": 3, "status": "no response", "message": timed_out["message"]}
    with pytest.raises(NonRetryableError) as err:
        run_node(doc, "fail", explained)
    assert err.value.message == f"invoices for customer 3 unavailable: {timed_out['message']}"
    assert err.value.error_type == "InvoicesUnavailable" and err.value.details == {
        "status": "no response"
    }
