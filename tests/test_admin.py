"""The admin as a console: execution pages with the graph coloured by node-run status and a
timeline, the workflow page with its graph, the execution list."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from executions.models import Execution
from executions.services.executions import execution_create
from monitoring.graphs import graph_svg
from tests.support.workflows import edge, make_workflow, node, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def panel(html: str, name: str) -> str:
    found = re.search(rf'<fieldset class="module aligned wc-{name}">(.*?)</fieldset>', html, re.S)
    assert found, f"no {name} panel"
    return found.group(1)


def node_groups(html: str) -> dict[str, str]:
    """data-node -> data-status of every node drawn in the page's graph SVG."""
    return dict(
        re.findall(r'<g class="node [^"]*" data-node="([^"]+)" data-status="([^"]+)">', html)
    )


@pytest.fixture
def finished_execution(worker, user):
    wf = make_workflow(
        user,
        [
            node("start"),
            node("boom", "test_behave", config={"fail_attempts": 9, "retryable": False}),
            node("after"),
            node("handler"),
        ],
        [edge("start", "boom"), edge("boom", "after"), edge("boom", "handler", "error")],
    )
    execution, _ = execution_create(workflow=wf, input={"x": 1})
    return wait_for(execution.id)


def test_execution_page_shows_graph_with_statuses_and_timeline(admin_client, finished_execution):
    ex = finished_execution
    assert ex.status == "succeeded"
    response = admin_client.get(f"/admin/executions/execution/{ex.id}/change/")
    assert response.status_code == 200
    html = response.content.decode()
    assert panel(html, "graph").count("<svg") == 1 and panel(html, "timeline").count("<svg") == 1
    assert "<?xml" not in html
    assert node_groups(html) == {
        "start": "succeeded",
        "boom": "failed",
        "after": "skipped",
        "handler": "succeeded",
    }
    assert "<title>boom (test_behave): failed, attempts 1</title>" in html
    assert "<title>start → boom (success)</title>" in html
    assert 'class="edge edge-error"' in html
    # Timeline: one row per node run, with its attempts and times in the hover text.
    rows = re.findall(
        r'<g class="run status-(\w+)" data-node="([^"]+)">\s*<title>([^<]+)</title>', html
    )
    assert {n: s for s, n, _ in rows} == {
        "start": "succeeded",
        "boom": "failed",
        "after": "skipped",
        "handler": "succeeded",
    }
    start_title = next(t for _, n, t in rows if n == "start")
    assert (
        "attempts 1; queued " in start_title
        and "; started " in start_title
        and "; finished " in start_title
    )
    # The page stays read-only: no save buttons.
    assert 'name="_save"' not in html


def test_execution_list_and_bad_ids(admin_client, finished_execution):
    response = admin_client.get("/admin/executions/execution/?status__exact=succeeded")
    html = response.content.decode()
    assert response.status_code == 200
    assert str(finished_execution.id) in html
    assert "border-radius:8px" in html and ">succeeded</span>" in html
    assert admin_client.get("/admin/executions/execution/?trigger__exact=api").status_code == 200
    # A malformed or unknown id: the admin's own redirect, never a 500.
    assert admin_client.get("/admin/executions/execution/not-a-uuid/change/").status_code == 302
    missing = "00000000-0000-0000-0000-000000000000"
    assert admin_client.get(f"/admin/executions/execution/{missing}/change/").status_code == 302
    assert admin_client.get("/admin/executions/workflow/nope/change/").status_code == 302


def test_execution_page_of_a_running_execution(admin_client, worker, user):
    wf = make_workflow(
        user,
        [node("slow", "test_behave", config={"sleep": 1.5}), node("next")],
        [edge("slow", "next")],
    )
    execution, _ = execution_create(workflow=wf, input={})
    wait_for(execution.id, statuses={"running"})
    html = admin_client.get(f"/admin/executions/execution/{execution.id}/change/").content.decode()
    groups = node_groups(html)
    assert groups["slow"] in ("queued", "running") and groups["next"] == "pending"
    wait_for(execution.id)


def test_workflow_page_shows_its_graph(admin_client, finished_execution):
    wf = finished_execution.workflow
    response = admin_client.get(f"/admin/executions/workflow/{wf.id}/change/")
    assert response.status_code == 200
    html = response.content.decode()
    assert panel(html, "graph").count("<svg") == 1
    assert "wc-timeline" not in html
    assert node_groups(html) == {k: "none" for k in ("start", "boom", "after", "handler")}
    assert "<title>boom → handler (error)</title>" in html


def test_only_superusers_and_read_only(client, user, finished_execution):
    client.force_login(user)
    response = client.get(f"/admin/executions/execution/{finished_execution.id}/change/")
    assert response.status_code == 302  # not staff: sent to the login page
    assert Execution.objects.filter(id=finished_execution.id, status="succeeded").exists()


# --- the SVG itself --------------------------------------------------------------------------

DOC = {
    "nodes": [{"key": k, "type": "noop"} for k in ("a", "b", "c", "d", "e", "lonely")],
    "connections": [
        {"source": "a", "target": "b", "type": "success"},
        {"source": "a", "target": "c", "type": "success", "branch": "left"},
        {"source": "b", "target": "d", "type": "success"},
        {"source": "c", "target": "d", "type": "error"},
        {"source": "a", "target": "e", "type": "success"},
        {"source": "e", "target": "d", "type": "success"},
    ],
}


def test_svg_layers_and_escaping():
    svg = graph_svg(DOC, {"a": {"status": "succeeded", "attempts": 1}})
    ys = {
        key: float(y)
        for key, y in re.findall(
            r'data-node="(\w+)"[^>]*>\s*<title>[^<]*</title>\s*<rect x="[\d.]+" y="([\d.]+)"', svg
        )
    }
    # Layered top to bottom: every connection points downwards.
    for c in DOC["connections"]:
        assert ys[c["source"]] < ys[c["target"]], c
    assert ys["lonely"] == ys["a"]
    nasty = graph_svg(
        {"nodes": [{"key": '<script>"x"</script>', "type": "a&b"}], "connections": []},
        {'<script>"x"</script>': {"status": 'bad"status', "attempts": 1}},
    )
    assert "<script>" not in nasty and '"x"' not in nasty.split("<title>")[0]
    assert "&lt;script&gt;" in nasty and "a&amp;b" in nasty


def test_svg_is_deterministic_across_processes():
    code = (
        "import hashlib, json, sys;"
        "from monitoring.graphs import graph_svg;"
        "doc = json.loads(sys.argv[1]);"
        "print(hashlib.sha256(graph_svg(doc).encode()).hexdigest())"
    )
    import json

    digests = {
        subprocess.run(
            [sys.executable, "-c", code, json.dumps(DOC)],
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent.parent,
        ).stdout.strip()
        for seed in ("1", "2", "3")
    }
    assert digests == {hashlib.sha256(graph_svg(DOC).encode()).hexdigest()}


def test_cancel_and_retry_actions(admin_client, worker, user):
    failing = make_workflow(
        user, [node("boom", "test_behave", config={"fail_attempts": 1, "retryable": False})]
    )
    failed = wait_for(execution_create(workflow=failing, input={})[0].id)
    assert failed.status == "failed"
    slow = make_workflow(user, [node("slow", "test_behave", config={"sleep": 2})])
    running, _ = execution_create(workflow=slow, input={})
    wait_for(running.id, statuses={"running"})

    url = "/admin/executions/execution/"
    response = admin_client.post(
        url, {"action": "retry_executions", "_selected_action": [str(failed.id)]}
    )
    assert response.status_code == 302
    retry = Execution.objects.get(retry_of=failed.id)
    assert retry.trigger == "retry"
    assert wait_for(retry.id).node_runs.get(node="boom").status == "failed"
    response = admin_client.post(
        url, {"action": "cancel_executions", "_selected_action": [str(running.id)]}
    )
    assert response.status_code == 302
    assert Execution.objects.get(id=running.id).status == "cancelled"
