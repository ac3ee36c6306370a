"""Node types and their helpers run directly (no worker): templating, expressions, routing
decisions, delays, Retry-After, body limits, and the node-type catalogue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from executions.graph import NodeSpec
from executions.nodes import (
    Context,
    NonRetryableError,
    Result,
    Wait,
    get_node_type,
    validate_config,
)
from executions.nodes.expressions import jmespath_truthy
from executions.nodes.http_request import retry_after_seconds
from executions.nodes.templating import Scope, render_value

BUILTIN = {
    "condition",
    "delay",
    "http_request",
    "merge",
    "noop",
    "python",
    "stop_and_error",
    "sub_workflow",
    "switch",
    "transform",
}


def ctx(
    type_: str, config: dict, input=None, state=None, nodes=None, execution_input=None
) -> Context:
    return Context(
        execution_id="00000000-0000-0000-0000-000000000001",
        node_run_id=1,
        workflow_id="w",
        owner_id=1,
        node=NodeSpec("n", type_, config=config),
        input=input,
        execution_input=execution_input if execution_input is not None else {"tag": "x"},
        attempt=1,
        depth=0,
        state=state,
        _load_nodes=(lambda: nodes) if nodes is not None else (lambda: pytest.fail("nodes loaded")),
    )


def run(type_: str, config: dict, **kwargs):
    assert validate_config(type_, config) == []
    return get_node_type(type_).run(ctx(type_, config, **kwargs))


# --- templating ----------------------------------------------------------------------------


def test_sole_expression_keeps_json_type_and_mixed_text_renders_a_string():
    c = ctx("noop", {}, input={"n": 3, "items": [1, 2], "name": "Ann"})
    scope = Scope(c)
    assert render_value("{{ input.n }}", scope, "x") == 3
    assert render_value(" {{ input.items }} ", scope, "x") == [1, 2]
    assert render_value("{{ input.n }} and {{ input.n }}", scope, "x") == "3 and 3"
    assert render_value("Hi {{ input.name|upper }}", scope, "x") == "Hi ANN"
    assert render_value("{% if input.n > 2 %}big{% endif %}", scope, "x") == "big"
    assert render_value(
        {"a": ["{{ execution.input.tag }}", {"jmespath": "length(input.items)"}]}, scope, "x"
    ) == {"a": ["x", 2]}
    assert render_value("{{ execution_id }}", scope, "x") == c.execution_id
    assert render_value("no template", scope, "x") == "no template"
    # Keys win over dict methods of the same name.
    assert render_value("{{ input.items|length }}", scope, "x") == 2


def test_nodes_are_loaded_only_when_mentioned():
    c = ctx("noop", {}, input={}, nodes={"fetch": {"id": 5}})
    scope = Scope(c)
    assert render_value("{{ nodes.fetch.id }}", scope, "x") == 5
    assert render_value({"jmespath": "nodes.fetch.id"}, scope, "x") == 5
    # A template without `nodes` never loads them (the loader would fail the test).
    assert render_value("{{ input }}", Scope(ctx("noop", {}, input={"a": 1})), "x") == {"a": 1}


def test_missing_variable_is_non_retryable_and_names_it():
    with pytest.raises(NonRetryableError) as err:
        run("transform", {"fields": {"id": "{{ input.order.missing_field }}"}}, input={"order": {}})
    assert "missing_field" in err.value.message and "config['fields']['id']" in err.value.message
    assert err.value.retryable is False and err.value.error_type == "TemplateError"


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "x {{ input.__class__.__name__ }}",
        "{{ input.update({'a': 1}) }}",  # the sandbox is immutable
        "{{ 'x' * 100000000 }}",  # unbounded repetition
        "{{ 10 ** 100000 }}",
    ],
)
def test_sandbox_blocks_unsafe_templates(template):
    with pytest.raises(NonRetryableError) as err:
        run("transform", {"fields": {"v": template}}, input={})
    assert err.value.retryable is False


def test_non_json_results_are_refused():
    with pytest.raises(NonRetryableError, match="not a JSON"):
        run("transform", {"fields": {"v": "{{ input.items }}"}}, input={})  # dict.items itself
    with pytest.raises(NonRetryableError, match="not a JSON number"):
        run("transform", {"fields": {"v": "{{ input.x|float }}"}}, input={"x": "nan"})


def test_templates_and_expressions_are_checked_when_saving():
    assert validate_config("transform", {"fields": {"a": "{{ input. }}"}}) == [
        "config['fields']['a']: template does not compile: expected name or number"
    ]
    assert (
        "JMESPath expression does not compile"
        in validate_config("transform", {"fields": {"a": {"jmespath": "foo[["}}})[0]
    )
    assert validate_config("condition", {"expression": "input.a >"})[0].startswith(
        "config: expression does not compile"
    )
    assert validate_config("condition", {"expression": "a", "jmespath": "b"})  # exactly one
    assert validate_config(
        "switch", {"cases": [{"name": "a", "expression": "1"}, {"name": "a", "jmespath": "x"}]}
    ) == ["config['cases'][1]['name']: duplicate case name 'a'"]
    assert validate_config("http_request", {"url": "ftp://x"}) == [
        "config['url']: must start with http:// or https://"
    ]
    assert validate_config("http_request", {"url": "http://x", "json": {}, "body": ""}) == [
        "config: give at most one request body, not json and body"
    ]
    assert validate_config("delay", {"until": "tomorrow"}) == [
        "config['until']: 'tomorrow' is not an ISO 8601 timestamp"
    ]
    assert validate_config("delay", {"seconds": 1, "until": "2030-01-01T00:00:00Z"})
    assert validate_config("sub_workflow", {"workflow": "not-a-uuid"})
    assert validate_config("stop_and_error", {"message": "{{ oops"})


# --- transform, condition, switch, stop_and_error --------------------------------------------


def test_transform_builds_an_object():
    out = run(
        "transform",
        {
            "fields": {
                "id": "{{ input.order.id }}",
                "count": {"jmespath": "length(input.items)"},
                "label": "order {{ input.order.id }}",
                "const": 5,
                "nested": {"tag": "{{ execution_input.tag }}"},
            }
        },
        input={"order": {"id": 42}, "items": [1, 2, 3]},
    )
    assert out == {"id": 42, "count": 3, "label": "order 42", "const": 5, "nested": {"tag": "x"}}
    kept = run("transform", {"fields": {"b": 2}, "keep_input": True}, input={"a": 1, "b": 1})
    assert kept == {"a": 1, "b": 2}


@pytest.mark.parametrize(
    ("config", "branch"),
    [
        ({"expression": "input.total > 100"}, "true"),
        ({"expression": "input.total > 1000"}, "false"),
        ({"expression": "input.missing is defined"}, "false"),
        ({"jmespath": "input.total > `100`"}, "true"),
        ({"jmespath": "input.tags"}, "false"),  # [] is false in JMESPath
        ({"jmespath": "input.zero"}, "true"),  # every number is true in JMESPath
    ],
)
def test_condition(config, branch):
    data = {"total": 150, "tags": [], "zero": 0}
    assert run("condition", config, input=data) == Result(data, branch)


def test_jmespath_truthiness():
    assert [jmespath_truthy(v) for v in (None, False, "", [], {}, 0, "a", [0], True)] == [
        False,
        False,
        False,
        False,
        False,
        True,
        True,
        True,
        True,
    ]


def test_switch_first_matching_case_or_default():
    config = {
        "cases": [
            {"name": "big", "expression": "input.total >= 1000"},
            {"name": "eu", "jmespath": "input.region == 'eu'"},
        ],
        "default": "other",
    }
    assert run("switch", config, input={"total": 5000, "region": "eu"}).branch == "big"
    assert run("switch", config, input={"total": 5, "region": "eu"}).branch == "eu"
    assert run("switch", config, input={"total": 5, "region": "us"}).branch == "other"
    assert (
        run("switch", {"cases": config["cases"]}, input={"total": 5, "region": "us"}).branch
        == "default"
    )


def test_stop_and_error_raises_non_retryable():
    with pytest.raises(NonRetryableError) as err:
        run(
            "stop_and_error",
            {"message": "order {{ input.id }} rejected", "details": {"code": "R1", "type": "x"}},
            input={"id": 9},
        )
    assert err.value.message == "order 9 rejected" and err.value.error_type == "StopAndError"
    assert err.value.details == {"code": "R1"}


# --- delay -----------------------------------------------------------------------------------


def test_delay_parks_then_resumes_with_the_first_wake_up_time():
    before = timezone.now()
    wait = run("delay", {"seconds": 30}, input={"a": 1})
    assert isinstance(wait, Wait)
    assert before + timedelta(seconds=30) <= wait.until <= timezone.now() + timedelta(seconds=30)
    # Resumed early (a message a moment before its time): wait again for the same time.
    again = run("delay", {"seconds": 30}, input={"a": 1}, state=dict(wait.state))
    assert isinstance(again, Wait) and again.until == wait.until
    # Resumed when due: the input passes on.
    past = (timezone.now() - timedelta(seconds=1)).isoformat()
    assert run("delay", {"seconds": 30}, input={"a": 1}, state={"until": past}) == {"a": 1}


def test_delay_until_a_templated_time():
    soon = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    wait = run(
        "delay", {"until": "{{ input.at }}"}, input={"at": soon.isoformat().replace("+00:00", "Z")}
    )
    assert wait.until == soon
    assert run("delay", {"until": "2000-01-01T00:00:00"}, input=[1]) == [1]  # past: no wait
    assert run("delay", {"seconds": 0}, input="x") == "x"
    with pytest.raises(NonRetryableError, match="not an ISO 8601"):
        run("delay", {"until": "{{ input.at }}"}, input={"at": "soon"})


# --- http_request helpers ----------------------------------------------------------------------


def test_retry_after_parsing():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("3", now) == 3.0
    assert retry_after_seconds("1.5", now) == 1.5
    assert retry_after_seconds("Thu, 01 Jan 2026 12:00:10 GMT", now) == 10.0
    assert retry_after_seconds("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0  # in the past
    assert retry_after_seconds("-5", now) == 0.0
    assert retry_after_seconds("99999999", now) == 86400.0
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None


# --- python --------------------------------------------------------------------------------------


def test_python_allow_list(settings):
    settings.WECONNECT_PYTHON_NODES = [
        "tests.support.nodes.double",
        "tests.support.nodes.describe_context",
    ]
    assert run(
        "python", {"function": "tests.support.nodes.double", "pass": "input"}, input={"n": 4}
    ) == {"n": 8}
    out = run("python", {"function": "tests.support.nodes.describe_context"}, input={"a": 1})
    assert out == {"attempt": 1, "node": "n", "input": {"a": 1}, "depth": 0}
    assert validate_config("python", {"function": "os.system"}) == [
        "config['function']: 'os.system' is not in WECONNECT_PYTHON_NODES "
        "(tests.support.nodes.double, tests.support.nodes.describe_context)"
    ]
    # What the function returns must be storable JSON.
    fn = {"function": "tests.support.nodes.describe_context"}
    assert run("python", fn, input={"return": [1, (2, 3)]}) == [1, [2, 3]]
    for bad, reason in (
        ("return_nan", "not a JSON number"),
        ("return_object", "not a JSON value"),
        ("return_tuple", "NUL character"),
    ):
        with pytest.raises(NonRetryableError, match=reason) as err:
            run("python", fn, input={bad: True})
        assert err.value.error_type == "InvalidOutput"
        assert "tests.support.nodes.describe_context returned" in err.value.message
    # A function removed from the list after the workflow was saved no longer runs.
    settings.WECONNECT_PYTHON_NODES = []
    with pytest.raises(NonRetryableError, match="not in WECONNECT_PYTHON_NODES"):
        get_node_type("python").run(
            ctx("python", {"function": "tests.support.nodes.double"}, input={"n": 1})
        )


# --- the catalogue -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_node_types_are_published_with_closed_schemas(api):
    res = api.get("/api/node-types/")
    assert res.status_code == 200
    published = {t["type"]: t for t in res.json()}
    assert BUILTIN <= set(published)
    for name in BUILTIN:
        doc = published[name]
        assert doc["description"]
        assert doc["config_schema"]["type"] == "object"
        assert doc["config_schema"]["additionalProperties"] is False
    assert get_node_type("merge").detects_error_output is False
    assert get_node_type("http_request").detects_error_output is True
