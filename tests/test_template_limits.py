"""Template filters and string methods cannot allocate past the output limit: each is
refused before it builds the string (center, indent, format with a width, wordwrap,
replace, join, batch, tojson's indent, str.ljust/format, the % operator, long loops)."""

from __future__ import annotations

import pytest

from executions.nodes.templating import compile_template
from executions.services.executions import execution_create
from tests.support.workflows import make_workflow, node, runs_by_node, wait_for

pytestmark = [pytest.mark.django_db(transaction=True)]

REFUSED = [
    '{{ "x"|center(100000000) }}',
    '{{ "%100000000s"|format(1) }}',
    '{{ "%.100000000f"|format(1.5) }}',
    '{{ ("a\\n" * 100000)|indent(1000) }}',
    '{{ ("a " * 100000)|wordwrap(1, wrapstring="x" * 1000) }}',
    '{{ ("a" * 1000)|replace("a", "b" * 10000) }}',
    '{{ range(100000)|join("x" * 1000) }}',
    '{{ [1]|batch(1000000000, "x")|list }}',
    "{{ [1, 2]|tojson(indent=100000000) }}",
    '{{ "x".ljust(100000000) }}',
    '{{ "{:>100000000}".format(1) }}',
    '{{ "{a:>100000000}".format_map({"a": 1}) }}',
    '{{ "%100000000s" % 1 }}',
    '{{ "x".center(100000000) }}',
    '{% for i in range(100000) %}{{ "x" * 100000 }}{% endfor %}',
]

ALLOWED = {
    '{{ "abc"|center(9) }}': "   abc   ",
    '{{ "%5.2f"|format(3.14159) }}': " 3.14",
    '{{ [1, 2, 3]|join(",") }}': "1,2,3",
    '{{ "a b c"|wordwrap(3) }}': "a b\nc",
    '{{ "hi"|indent(2, true) }}': "  hi",
    '{{ "x".ljust(3) }}|': "x  |",
    '{{ "{:>3}".format(1) }}': "  1",
    '{{ "%s-%s" % (1, 2) }}': "1-2",
    '{{ "aXa"|replace("X", "yy") }}': "ayya",
}


@pytest.mark.parametrize("source", REFUSED)
def test_filters_that_would_build_too_much_are_refused(source):
    from jinja2.sandbox import SecurityError

    with pytest.raises(SecurityError, match=r"would build about \d+ characters|longer than"):
        compile_template(source).evaluate({})


@pytest.mark.parametrize("source", sorted(ALLOWED))
def test_ordinary_uses_are_untouched(source):
    assert str(compile_template(source).evaluate({})) == ALLOWED[source]


@pytest.mark.worker
def test_a_huge_center_fails_the_node_once_without_building_it(worker, user):
    wf = make_workflow(
        user, [node("t", "transform", config={"fields": {"v": '{{ "x"|center(300000000) }}'}})]
    )
    execution, _ = execution_create(workflow=wf, input={})
    ex = wait_for(execution.id, timeout=60)
    t = runs_by_node(ex)["t"]
    assert t.status == "failed" and t.attempts == 1
    assert t.output["type"] == "TemplateError"
    assert "filter 'center' would build about 300000000 characters" in t.output["message"]
