"""Bodies the database cannot store or the parser cannot take answer 400 naming the problem,
on every JSON endpoint: the NUL character, lone surrogates, numbers too large for a float,
and deep nesting (a depth limit of 64 in request parsing). Nothing is written."""

from __future__ import annotations

import json

import pytest

from executions.credentials.models import Credential
from executions.models import Execution, Workflow
from executions.services.executions import execution_create
from tests.support.workflows import make_workflow, node

pytestmark = [pytest.mark.django_db(transaction=True)]

PLACEHOLDER = '"__BAD__"'

# (JSON text put where the placeholder was, what the answer must say, whether the path of
# the bad value is named).
BAD_VALUES = {
    "nul": ('"x\\u0000y"', "NUL character", True),
    "lone_surrogate": ('"ab\\ud800"', "lone surrogate", True),
    "lone_low_surrogate_key": ('{"\\udc00": 1}', "lone surrogate", False),
    "huge_number": ("1e400", "too large", False),
    "huge_negative_number": ("-1e400", "too large", False),
    "nan": ("NaN", "NaN is not valid JSON", False),
    "nested_1000": ("[" * 1000 + "1" + "]" * 1000, "nested too deeply", False),
    "nested_65": ("[" * 65 + "1" + "]" * 65, "nested too deeply", False),
}


@pytest.fixture
def targets(user):
    workflow = make_workflow(user, [node("a")], webhook_enabled=True)
    workflow = Workflow.objects.get(pk=workflow.pk)
    execution, _ = execution_create(workflow=workflow, input={})
    Execution.objects.filter(pk=execution.pk).update(status="failed")
    return {"workflow": workflow, "execution": execution}


def _endpoints(targets, api):
    wf = targets["workflow"]
    doc = '{"name": "w", "nodes": [{"key": "a", "type": "noop", "config": {"v": "__BAD__"}}]}'
    cred = '{"name": "c", "kind": "generic", "data": {"f": "__BAD__"}}'
    created = api.post(
        "/api/credentials/",
        {"name": "existing", "kind": "generic", "data": {"f": "v"}},
        format="json",
    )
    assert created.status_code == 201, created.content
    return [
        ("POST", "/api/workflows/", doc, "nodes[0].config.v"),
        ("PUT", f"/api/workflows/{wf.pk}/", doc, "nodes[0].config.v"),
        ("POST", f"/api/workflows/{wf.pk}/execute/", '{"input": {"v": "__BAD__"}}', "input.v"),
        ("POST", f"/api/hooks/{wf.pk}/", '{"v": "__BAD__"}', "v"),
        ("POST", "/api/credentials/", cred, "data.f"),
        ("PUT", f"/api/credentials/{created.json()['id']}/", cred, "data.f"),
        (
            "POST",
            f"/api/executions/{targets['execution'].pk}/retry/",
            '{"mode": "__BAD__"}',
            "mode",
        ),
    ]


@pytest.mark.parametrize("kind", sorted(BAD_VALUES))
def test_bad_values_answer_400_everywhere(api, targets, kind):
    fragment, reason, names_path = BAD_VALUES[kind]
    wf = targets["workflow"]
    endpoints = _endpoints(targets, api)
    before = (
        Workflow.objects.count(),
        Execution.objects.count(),
        Credential.objects.count(),
        Workflow.objects.get(pk=wf.pk).version,
    )
    for method, url, template, path in endpoints:
        body = template.replace(PLACEHOLDER, fragment)
        res = api.generic(
            method,
            url,
            body,
            content_type="application/json",
            HTTP_X_WECONNECT_TOKEN=wf.webhook_token,
        )
        text = json.dumps(res.json())
        assert res.status_code == 400, (method, url, res.status_code, res.content[:500])
        assert reason in text, (method, url, text)
        if names_path:
            assert path in text, (method, url, text)
    after = (
        Workflow.objects.count(),
        Execution.objects.count(),
        Credential.objects.count(),
        Workflow.objects.get(pk=wf.pk).version,
    )
    assert after == before


def test_64_levels_are_accepted(api, user):
    """The limit is on nesting, not on ordinary documents: 60 levels of input go in."""
    wf = make_workflow(user, [node("a")])
    deep = "[" * 60 + "1" + "]" * 60
    res = api.generic(
        "POST",
        f"/api/workflows/{wf.pk}/execute/",
        '{"input": {"v": ' + deep + "}}",
        content_type="application/json",
    )
    assert res.status_code == 202, res.content


def test_valid_surrogate_pairs_and_big_finite_numbers_are_fine(api, user):
    wf = make_workflow(user, [node("a")])
    res = api.generic(
        "POST",
        f"/api/workflows/{wf.pk}/execute/",
        '{"input": {"emoji": "\\ud83d\\ude00", "n": 1e308, "i": 123456789012345678901234567890}}',
        content_type="application/json",
    )
    assert res.status_code == 202, res.content
    execution = Execution.objects.get(pk=res.json()["id"])
    assert execution.input["emoji"] == "\U0001f600" and float(execution.input["n"]) == 1e308


def test_form_bodies_are_not_parsed(api, user):
    """Only JSON is parsed: a form body could carry a NUL past the JSON checks."""
    wf = make_workflow(user, [node("a")])
    res = api.generic(
        "POST",
        f"/api/workflows/{wf.pk}/execute/",
        "input.v=%00",
        content_type="application/x-www-form-urlencoded",
    )
    assert res.status_code == 415
    assert not Execution.objects.filter(workflow=wf).exists()


@pytest.mark.parametrize("key", ["a\x00b", "line\nbreak", "x" * 256])
def test_bad_idempotency_keys_answer_400_naming_the_header(api, user, key):
    wf = make_workflow(user, [node("a")], webhook_enabled=True)
    wf.refresh_from_db()
    answers = [
        api.post(f"/api/workflows/{wf.id}/execute/", {}, format="json", HTTP_IDEMPOTENCY_KEY=key),
        api.post(
            f"/api/hooks/{wf.id}/",
            {},
            format="json",
            HTTP_IDEMPOTENCY_KEY=key,
            HTTP_X_WECONNECT_TOKEN=wf.webhook_token,
        ),
        api.post(
            "/api/executions/bulk/",
            {"action": "cancel", "filter": {"status": "failed"}},
            format="json",
            HTTP_IDEMPOTENCY_KEY=key,
        ),
    ]
    for r in answers:
        assert r.status_code == 400, (r.status_code, r.content[:300])
        assert "Idempotency-Key" in r.json()
    assert not Execution.objects.exists()
