"""The OpenAPI document, the Swagger UI page, and property-based requests generated from the
schema (schemathesis, in process through WSGI) that must never answer 5xx."""

from __future__ import annotations

import re
import zlib

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings

from executions.services.executions import execution_create
from executions.services.workflows import workflow_create

pytestmark = pytest.mark.django_db


def test_schema_is_an_openapi_3_document(api):
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "WeConnect API"
    paths = schema["paths"]
    for path in (
        "/api/workflows/",
        "/api/workflows/{id}/",
        "/api/workflows/{id}/execute/",
        "/api/executions/",
        "/api/executions/{id}/",
        "/api/executions/{id}/cancel/",
        "/api/executions/{id}/retry/",
        "/api/node-types/",
    ):
        assert path in paths, sorted(paths)
    assert "patch" not in paths["/api/workflows/{id}/"]
    assert "tokenAuth" in schema["components"]["securitySchemes"]
    for path in ("/api/workflows/{id}/", "/api/executions/{id}/"):
        (param,) = [p for p in paths[path]["get"]["parameters"] if p["name"] == "id"]
        assert param["schema"] == {"type": "string", "format": "uuid"}, path


def test_schema_yaml_default(api):
    response = api.get("/api/schema/")
    assert response.status_code == 200
    assert response.content.startswith(b"openapi: 3.")


def test_swagger_ui_uses_the_bundled_files_only(api):
    response = api.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui.css" in html
    assert "/api/schema/" in html
    external = re.findall(r"""(?:src|href)=["'](https?:)?//""", html)
    assert external == [], "Swagger UI must not load anything from a CDN"
    assert "cdn.jsdelivr" not in html and "unpkg.com" not in html


# --- Property-based: no operation answers 5xx ----------------------------------------------

VALID_DOC = {
    "name": "fuzz target",
    "nodes": [
        {"key": "a", "type": "noop"},
        {"key": "b", "type": "test_behave", "config": {"fail_attempts": 0}},
    ],
    "connections": [{"source": "a", "target": "b"}],
}


@pytest.fixture
def web_schema(settings):
    from weconnect.wsgi import application

    settings.WECONNECT_PUBLIC_API_DOCS = True  # the schema is loaded without a token
    settings.ALLOWED_HOSTS = [
        "localhost",
        "testserver",
    ]  # schemathesis's WSGI client sends Host: localhost
    # Like Django's own test client: keep the request cycle from closing the connection that
    # holds this test's transaction.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def targets(user):
    """Real rows for the generated requests to act on, so that detail routes reach the views
    instead of stopping at 404."""
    from rest_framework.authtoken.models import Token

    from executions.api.serializers import WorkflowInputSerializer

    def make():
        serializer = WorkflowInputSerializer(data=VALID_DOC)
        serializer.is_valid(raise_exception=True)
        workflow = workflow_create(owner=user, data=serializer.validated_data)
        # Without a worker nothing runs: the execution stays pending (cancellable; a retry
        # answers 409 until it has finished).
        execution, _ = execution_create(workflow=workflow, input={"x": 1})
        return workflow, execution

    state = {"token": Token.objects.get_or_create(user=user)[0].key, "make": make}
    state["workflow"], state["execution"] = make()
    return state


def exercise(case, targets) -> None:
    from executions.models import Execution, Workflow

    if "id" in (case.path_parameters or {}):
        # Half the cases hit real rows (recreated when a generated DELETE removed them); the
        # others keep the generated id and exercise the 404 paths.
        if not (
            Workflow.objects.filter(pk=targets["workflow"].pk).exists()
            and Execution.objects.filter(pk=targets["execution"].pk).exists()
        ):
            targets["workflow"], targets["execution"] = targets["make"]()
        if zlib.crc32(str(case.path_parameters["id"]).encode()) % 2 == 0:
            target = (
                targets["execution"]
                if case.path.startswith("/api/executions")
                else targets["workflow"]
            )
            case.path_parameters["id"] = str(target.pk)
    response = case.call(headers={"Authorization": f"Token {targets['token']}"})
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} query={case.query} body={case.body!r} -> "
        f"{response.status_code}: {response.text[:2000]}"
    )


def test_no_operation_answers_5xx(web_schema, targets):
    operations = []
    failures = []
    for result in web_schema.get_all_operations():
        operation = result.ok()
        # Every operation the schema publishes (workflows, executions, node types and whatever
        # else is mounted under /api/), not only the ones named below.
        if not operation.path.startswith("/api/"):
            continue
        operations.append(f"{operation.method.upper()} {operation.path}")

        @hypothesis_settings(
            max_examples=30,
            derandomize=True,  # the same examples every run
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            phases=[Phase.explicit, Phase.generate],
        )
        @given(case=operation.as_strategy())
        def run(case):
            exercise(case, targets)

        try:
            run()
        except AssertionError as exc:
            failures.append(str(exc))
    assert {
        "GET /api/workflows/",
        "POST /api/workflows/",
        "PUT /api/workflows/{id}/",
        "DELETE /api/workflows/{id}/",
        "POST /api/workflows/{id}/execute/",
        "GET /api/executions/",
        "POST /api/executions/{id}/cancel/",
        "POST /api/executions/{id}/retry/",
        "GET /api/node-types/",
    } <= set(operations), operations
    assert failures == []
