"""Who reads what of /monitoring: without a monitoring token (the default) the public sees
aggregate figures only; failure details and worker names need the token or a staff user. Public
health answers from one shared probe, however many call it. `check --deploy` warns when the
token is unset."""

from __future__ import annotations

import threading

import pytest
from django.core.checks import run_checks
from django.test import Client, override_settings

from executions.services.executions import execution_create
from monitoring import health as health_module
from tests.conftest import client_for
from tests.support.workflows import make_workflow, node, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

MARKER = "users-private-value-7f3a"


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(
        username="operator", password="pw-operator-123", is_staff=True
    )


def failed_with_private_data(user, server) -> None:
    """A failed http_request whose error document holds the URL's query key and the remote
    response body (which echoes the input)."""
    wf = make_workflow(
        user,
        [
            node(
                "call",
                "http_request",
                config={
                    "method": "POST",
                    "url": server.url(f"/echo-500?api_key={MARKER}"),
                    "body": "{{ input }}",
                },
                retry={"max_retries": 0},
            )
        ],
    )
    execution, _ = execution_create(workflow=wf, input={"ssn": MARKER})
    assert wait_for(execution.id).status == "failed"


def test_public_json_metrics_hide_failure_details_and_jobs(
    worker, client, user, staff, http_server
):
    failed_with_private_data(user, http_server)

    public = client.get("/monitoring/metrics?format=json")
    assert public.status_code == 200
    assert MARKER not in public.content.decode()
    doc = public.json()
    assert doc["recent_failures"] is None and doc["active_jobs"] is None
    assert set(doc["restricted"]) == {"recent_failures", "active_jobs"}
    assert doc["node_runs"]  # aggregate figures stay public
    # A signed-in user who is not staff is the public too.
    assert MARKER not in client_for(user).get("/monitoring/metrics?format=json").content.decode()

    session = Client()
    session.force_login(staff)
    as_staff = session.get("/monitoring/metrics?format=json")
    assert as_staff.status_code == 200 and MARKER in as_staff.content.decode()
    assert as_staff.json()["recent_failures"][0]["node"] == "call"
    assert as_staff.json()["restricted"] == []
    staff_token = client_for(staff).get("/monitoring/metrics?format=json")
    assert MARKER in staff_token.content.decode()

    with override_settings(WECONNECT_MONITORING_TOKEN="mon-token"):
        with_token = client.get(
            "/monitoring/metrics?format=json", HTTP_AUTHORIZATION="Bearer mon-token"
        )
        assert with_token.status_code == 200 and MARKER in with_token.content.decode()
        # With a token configured, a staff session still reads everything.
        assert session.get("/monitoring/metrics?format=json").status_code == 200
        assert client.get("/monitoring/metrics?format=json").status_code == 401


def test_public_health_names_no_worker(worker, client, staff, beat_ran):
    beat_ran()
    public = client.get("/monitoring/health").json()
    assert public["checks"]["workers"]["online"] >= 1
    assert "workers" not in public["checks"]["workers"]
    assert worker.hostname not in str(public)

    session = Client()
    session.force_login(staff)
    full = session.get("/monitoring/health").json()
    assert worker.hostname in full["checks"]["workers"]["workers"]
    with override_settings(WECONNECT_MONITORING_TOKEN="mon-token"):
        token = client.get("/monitoring/health", HTTP_AUTHORIZATION="Bearer mon-token").json()
    assert worker.hostname in token["checks"]["workers"]["workers"]


def test_concurrent_public_health_calls_cost_one_probe(worker, beat_ran):
    beat_ran()
    callers = 32
    barrier = threading.Barrier(callers)
    answers: list[tuple[int, dict]] = []
    lock = threading.Lock()

    def call() -> None:
        c = Client()
        barrier.wait(timeout=30)
        response = c.get("/monitoring/health")
        with lock:
            answers.append((response.status_code, response.json()))

    before = health_module.probe_runs.value
    # A generous lifetime: the 32 callers must all land within it on a loaded machine; the
    # default (1.5 s) is what production uses.
    with override_settings(WECONNECT_HEALTH_CACHE_SECONDS=30):
        threads = [threading.Thread(target=call) for _ in range(callers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert len(answers) == callers
    assert health_module.probe_runs.value - before == 1
    assert {code for code, _ in answers} == {200}
    assert {doc["status"] for _, doc in answers} == {"ok"}


def test_public_health_probes_again_once_the_result_is_old(worker, beat_ran):
    beat_ran()
    before = health_module.probe_runs.value
    with override_settings(WECONNECT_HEALTH_CACHE_SECONDS=0):
        Client().get("/monitoring/health")
        Client().get("/monitoring/health")
    assert health_module.probe_runs.value - before == 2


def test_check_deploy_warns_when_the_token_is_unset():
    with override_settings(WECONNECT_MONITORING_TOKEN=""):
        ids = [m.id for m in run_checks(include_deployment_checks=True)]
        assert "monitoring.W001" in ids
    with override_settings(WECONNECT_MONITORING_TOKEN="mon-token"):
        ids = [m.id for m in run_checks(include_deployment_checks=True)]
        assert "monitoring.W001" not in ids
