"""GET /api/executions/ carries summaries: inputs, outputs, errors and node runs belong to the
detail view, so a page of executions with 1 MB outputs stays small."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from executions.models import Execution, NodeRun
from executions.services.executions import execution_create
from tests.support.workflows import make_workflow, node

pytestmark = [pytest.mark.django_db]

BIG = "x" * 1_000_000


def _finished_with_big_documents(user, n: int) -> list[Execution]:
    wf = make_workflow(user, [node("a")])
    executions = []
    for i in range(n):
        ex, _ = execution_create(workflow=wf, input={"i": i, "blob": BIG[:1000]})
        Execution.objects.filter(pk=ex.pk).update(
            status="failed",
            output={"blob": BIG},
            error={"node": "a", "message": f"boom {i} " + "m" * 2000, "detail": {"body": BIG}},
        )
        NodeRun.objects.filter(execution=ex).update(status="failed", output={"blob": BIG})
        executions.append(ex)
    return executions


def test_list_is_summaries_and_detail_keeps_everything(api, user):
    executions = _finished_with_big_documents(user, 5)
    with CaptureQueriesContext(connection) as queries:
        res = api.get("/api/executions/?page_size=500")
    assert res.status_code == 200
    assert len(res.content) < 20_000, len(res.content)  # 5 MB of outputs not embedded
    # The large columns are not even read from the database.
    listing = [q["sql"] for q in queries if "executions_execution" in q["sql"]]
    assert listing and not any('"executions_execution"."output"' in q for q in listing)
    assert not any("executions_noderun" in q["sql"] for q in queries)
    item = res.json()["results"][0]
    assert {"input", "output", "error", "node_runs"}.isdisjoint(item)
    assert {
        "id",
        "workflow",
        "workflow_version",
        "status",
        "trigger",
        "created_at",
        "finished_at",
    } <= set(item)
    assert item["status"] == "failed"
    assert item["error_message"].startswith("boom 4 ") and len(item["error_message"]) == 500

    detail = api.get(f"/api/executions/{executions[0].pk}/").json()
    assert detail["output"] == {"blob": BIG} and detail["error"]["detail"] == {"body": BIG}
    assert detail["node_runs"][0]["output"] == {"blob": BIG}


def test_list_without_errors_has_null_message(api, user):
    wf = make_workflow(user, [node("a")])
    execution_create(workflow=wf, input={})
    (item,) = api.get("/api/executions/").json()["results"]
    assert item["error_message"] is None and item["status"] == "pending"
