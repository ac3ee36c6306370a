"""Boolean expressions for routing nodes (condition, switch).

An expression is given either as ``{"expression": "<Jinja expression>"}`` (no braces, e.g.
``input.total > 100 and input.country == "DE"``) or as ``{"jmespath": "<JMESPath>"}`` (e.g.
``input.total > `100```). Both are evaluated over the same scope as config templates and
never reach ``eval``. Truthiness follows the language: Python's for Jinja, JMESPath's for
JMESPath (false, null, "", [] and {} are false; every number, 0 included, is true).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from executions.nodes.templating import (
    Scope,
    TemplateProblem,
    compile_jinja_expression,
    compile_jmespath,
    evaluate_jinja_expression,
    evaluate_jmespath,
)

EXPRESSION_PROPERTIES: dict[str, Any] = {
    "expression": {
        "type": "string",
        "minLength": 1,
        "maxLength": 10000,
        "description": "A Jinja expression (no braces).",
    },
    "jmespath": {
        "type": "string",
        "minLength": 1,
        "maxLength": 10000,
        "description": "A JMESPath expression.",
    },
}
# Exactly one of the two keys.
ONE_EXPRESSION: dict[str, Any] = {
    "oneOf": [{"required": ["expression"]}, {"required": ["jmespath"]}]
}


def expression_errors(spec: Mapping[str, Any], where: str) -> list[str]:
    try:
        if "expression" in spec:
            compile_jinja_expression(spec["expression"])
        else:
            compile_jmespath(spec["jmespath"])
    except TemplateProblem as exc:
        return [f"{where}: {exc}"]
    return []


def jmespath_truthy(value: Any) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, str | list | dict) and len(value) == 0:
        return False
    return True


def evaluate_condition(spec: Mapping[str, Any], scope: Scope, where: str) -> bool:
    if "expression" in spec:
        return bool(evaluate_jinja_expression(spec["expression"], scope, f"{where}['expression']"))
    return jmespath_truthy(evaluate_jmespath(spec["jmespath"], scope, f"{where}['jmespath']"))
