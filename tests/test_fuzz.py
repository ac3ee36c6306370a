"""Hostile input over the whole OpenAPI schema: no request may answer 5xx.

Hypothesis builds request bodies as JSON *text* for every operation the schema publishes,
shaped by the operation's request schema and by a valid document for it, with an alphabet of
what broke the API before: the NUL character, lone surrogates, numbers too large for a float
(``1e400``), NaN, deep nesting (up to 5,000 levels), template markers and quotes. Query
parameters and headers get the same alphabet. Derandomized and bounded (a few hundred
requests, well under a minute), so it runs in every ``make test``."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from executions.services.executions import execution_create
from tests.support.workflows import make_workflow, node

pytestmark = pytest.mark.django_db

EXAMPLES_PER_OPERATION = 40


class Raw(str):
    """JSON text put into a document as it is (a number no float can hold, deep nesting)."""


def to_json_text(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return (
            "{"
            + ",".join(f"{to_json_text(str(k))}:{to_json_text(v)}" for k, v in value.items())
            + "}"
        )
    if isinstance(value, list):
        return "[" + ",".join(to_json_text(v) for v in value) + "]"
    return json.dumps(value)  # escapes NUL and lone surrogates as \u0000 / \ud800


SPECIAL_CHARS = ["\x00", "\ud800", "\udfff", "\udc00", "\ud83d", "\U0001f600", "é", '"', "\\"]
SPECIAL_STRINGS = ["{{", "}}", "{%", "{{ input }}", "%s", "%(x)s", "{0}", "'", "\n", " "]

texts = st.lists(
    st.one_of(
        st.sampled_from(SPECIAL_CHARS),
        st.sampled_from(SPECIAL_STRINGS),
        st.characters(),
    ),
    max_size=12,
).map("".join)


def nested(depth: int, leaf: str = "1") -> Raw:
    return Raw("[" * depth + leaf + "]" * depth)


raw_tokens = st.one_of(
    st.sampled_from(
        [Raw(t) for t in ("1e400", "-1e400", "1e-400", "NaN", "Infinity", "-Infinity", "1" * 5000)]
    ),
    st.sampled_from([63, 64, 65, 200, 1000, 5000]).map(nested),
    st.sampled_from([64, 1000]).map(lambda d: Raw('{"a":' * d + "1" + "}" * d)),
)

leaves = st.one_of(
    texts,
    raw_tokens,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)

values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(texts, children, max_size=3)
    ),
    max_leaves=8,
)


def _resolve(schema: dict, spec: dict) -> dict:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec["components"]["schemas"][name]
    return schema


def shaped(schema: dict, spec: dict, depth: int = 0) -> st.SearchStrategy:
    """Documents with the keys the schema names, holding hostile or plausible values."""
    schema = _resolve(schema, spec)
    if depth > 4:
        return values
    if schema.get("type") == "object" and schema.get("properties"):
        props = {
            key: st.one_of(values, shaped(sub, spec, depth + 1))
            for key, sub in schema["properties"].items()
        }
        return st.fixed_dictionaries({}, optional=props)
    if schema.get("type") == "array" and "items" in schema:
        return st.lists(st.one_of(values, shaped(schema["items"], spec, depth + 1)), max_size=3)
    return values


def _leaf_paths(doc: Any, path=()) -> list[tuple]:
    if isinstance(doc, dict) and doc:
        return [p for k, v in doc.items() for p in _leaf_paths(v, (*path, k))] + [path]
    if isinstance(doc, list) and doc:
        return [p for i, v in enumerate(doc) for p in _leaf_paths(v, (*path, i))] + [path]
    return [path]


def _replaced(doc: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    copy = dict(doc) if isinstance(doc, dict) else list(doc)
    copy[path[0]] = _replaced(doc[path[0]], path[1:], value)
    return copy


@st.composite
def poisoned(draw, valid: dict) -> Any:
    """A valid document with one value (or one subtree) replaced by a hostile one."""
    path = draw(st.sampled_from(_leaf_paths(valid)))
    return _replaced(valid, path, draw(values))


VALID_WORKFLOW = {
    "name": "fuzzed",
    "timeout_seconds": 60,
    "webhook_enabled": True,
    "schedule": {"cron": "*/5 * * * *", "timezone": "UTC"},
    "nodes": [
        {"key": "a", "type": "noop"},
        {
            "key": "b",
            "type": "transform",
            "config": {"fields": {"v": "{{ input.x | default(1) }}"}},
            "retry": {"max_retries": 1, "backoff_seconds": 0.5},
            "timeout_seconds": 30,
        },
        {"key": "c", "type": "http_request", "config": {"url": "http://127.0.0.1:9/x"}},
    ],
    "connections": [
        {"source": "a", "target": "b"},
        {"source": "b", "target": "c", "type": "error"},
    ],
}
VALID_BODIES = {
    ("post", "/api/workflows/"): VALID_WORKFLOW,
    ("put", "/api/workflows/{id}/"): VALID_WORKFLOW,
    ("post", "/api/workflows/{id}/execute/"): {"input": {"x": 1, "list": [1, "a"]}},
    ("post", "/api/executions/{id}/retry/"): {"mode": "from_start"},
    ("post", "/api/credentials/"): {"name": "fz", "kind": "generic", "data": {"k": "v"}},
    ("put", "/api/credentials/{id}/"): {"name": "fz2", "kind": "bearer", "data": {"token": "t"}},
    ("post", "/api/hooks/{workflow_id}/"): {"order": {"id": 1, "note": "x"}},
    ("post", "/api/workflows/{id}/backfill/"): {
        "start": "2026-01-01T00:00:00Z",
        "end": "2026-01-01T01:00:00Z",
    },
    ("post", "/api/executions/bulk/"): {"action": "cancel", "filter": {"status": "failed"}},
    ("post", "/api/executions/{id}/resume/"): {"node": "a", "data": {"ok": True}},
    ("post", "/api/resume/{execution_id}/{node}/{token}/"): {"approved": True, "comment": "x"},
    ("post", "/api/rate-limits/"): {"name": "fz", "limit": 5, "period_seconds": 1},
    ("put", "/api/rate-limits/{id}/"): {"name": "fz2", "limit": 3, "period_seconds": 2},
}


@pytest.fixture
def world(api, user):
    """Real rows for the path parameters, so that requests reach the views."""
    workflow = make_workflow(user, [node("a")], webhook_enabled=True)
    workflow.refresh_from_db()
    execution, _ = execution_create(workflow=workflow, input={})
    from executions.models import Execution

    Execution.objects.filter(pk=execution.pk).update(status="failed")
    credential = api.post(
        "/api/credentials/",
        {"name": "base", "kind": "bearer", "data": {"token": "t"}},
        format="json",
    ).json()
    rate_limit = api.post(
        "/api/rate-limits/", {"name": "base", "limit": 5, "period_seconds": 1}, format="json"
    ).json()
    spec = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    return {
        "spec": spec,
        "ids": {
            "/api/workflows/": str(workflow.pk),
            "/api/executions/": str(execution.pk),
            "/api/credentials/": credential["id"],
            "/api/hooks/": str(workflow.pk),
            "/api/rate-limits/": str(rate_limit["id"]),
            "/api/resume/": str(execution.pk),
        },
        # Further path parameters, by name.
        "params": {"node": "a", "token": "not-a-resume-token"},
        "token": workflow.webhook_token,
    }


def _path(template: str, world: dict) -> str:
    if "{" not in template:
        return template
    prefix = template.split("{", 1)[0]
    prefix = "/api/" + prefix.split("/")[2] + "/"
    path = template.replace(
        template[template.index("{") : template.index("}") + 1], world["ids"][prefix], 1
    )
    for name, value in world["params"].items():
        path = path.replace("{" + name + "}", value)
    return path


def _body_operations(spec: dict) -> list[tuple[str, str, dict]]:
    found = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None and path.startswith("/api/"):
                found.append((method, path, body.get("schema", {})))
    return found


def _check(response, what: str) -> None:
    assert response.status_code < 500, (
        f"{what} -> {response.status_code}: {response.content[:500]!r}"
    )


def _fuzz_operation(api, world, method: str, path: str, bodies):
    @hypothesis_settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )
    @given(body=bodies, key=st.one_of(st.none(), texts))
    def run(body, key):
        headers = {"HTTP_X_WECONNECT_TOKEN": world["token"]}
        if key is not None:
            # Header values travel as latin-1 text in WSGI.
            headers["HTTP_IDEMPOTENCY_KEY"] = key.encode("utf-8", "surrogatepass").decode("latin-1")
        response = api.generic(
            method, path, body.encode("utf-8"), content_type="application/json", **headers
        )
        _check(response, f"{method} {path} {body[:300]!r}")

    return run


def test_hostile_bodies_never_answer_5xx(api, world):
    spec = world["spec"]
    operations = _body_operations(spec)
    covered = {(m, p) for m, p, _ in operations}
    # Every JSON operation is fuzzed, and each has a valid document to poison.
    assert covered == set(VALID_BODIES), sorted(covered ^ set(VALID_BODIES))
    for method, template, schema in operations:
        path = _path(template, world)
        bodies = st.one_of(
            shaped(schema, spec).map(to_json_text),
            poisoned(VALID_BODIES[(method, template)]).map(to_json_text),
            values.map(to_json_text),
        )

        _fuzz_operation(api, world, method.upper(), path, bodies)()


@hypothesis_settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(
    params=st.fixed_dictionaries(
        {},
        optional={
            "status": texts,
            "workflow": st.one_of(texts, st.uuids().map(str)),
            "page": st.one_of(texts, st.integers().map(str)),
            "page_size": st.one_of(texts, st.integers().map(str)),
            "cancel_active": texts,
        },
    ),
    target=st.sampled_from(
        ["/api/executions/", "/api/workflows/", "/api/credentials/", "/api/node-types/"]
    ),
)
def test_hostile_query_parameters_never_answer_5xx(api, world, params, target):
    from urllib.parse import quote

    query = "&".join(
        f"{quote(k)}={quote(v.encode('utf-8', 'surrogatepass'))}" for k, v in params.items()
    )
    _check(api.get(f"{target}?{query}"), f"GET {target}?{query}")
    if params:
        # Unknown ids in every spelling for the detail routes.
        _check(
            api.get(
                f"{target}{quote(next(iter(params.values())).encode('utf-8', 'surrogatepass'))}/"
            ),
            target,
        )
    _check(api.get(f"{target}{uuid.uuid4()}/"), target)
