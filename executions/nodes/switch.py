"""``switch``: route to the first named case whose expression holds, else the default."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from executions.nodes.base import Context, Result, register
from executions.nodes.expressions import (
    EXPRESSION_PROPERTIES,
    ONE_EXPRESSION,
    evaluate_condition,
    expression_errors,
)
from executions.nodes.templating import Scope, TemplatedNodeType

_NAME = {"type": "string", "minLength": 1, "maxLength": 64}


@register
class Switch(TemplatedNodeType):
    type = "switch"
    pure = True
    description = (
        "Evaluates its cases in order and passes its input on, selecting the branch named by the "
        'first case that holds, or `default` ("default" unless set) when none does.'
    )
    config_schema = {
        "type": "object",
        "properties": {
            "cases": {
                "type": "array",
                "minItems": 1,
                "maxItems": 100,
                "items": {
                    "type": "object",
                    "properties": {"name": _NAME, **EXPRESSION_PROPERTIES},
                    "required": ["name"],
                    **ONE_EXPRESSION,
                    "additionalProperties": False,
                },
            },
            "default": {**_NAME, "default": "default"},
        },
        "required": ["cases"],
        "additionalProperties": False,
    }
    raw_keys = frozenset({"cases"})
    detects_error_output = False

    def check_config(self, config: Mapping[str, Any]) -> list[str]:
        errors: list[str] = []
        seen: set[str] = set()
        default = config.get("default", "default")
        for i, case in enumerate(config["cases"]):
            where = f"config['cases'][{i}]"
            if case["name"] in seen:
                errors.append(f"{where}['name']: duplicate case name {case['name']!r}")
            if case["name"] == default:
                errors.append(f"{where}['name']: {case['name']!r} is also the default branch")
            seen.add(case["name"])
            errors.extend(expression_errors(case, where))
        return errors

    def execute(self, ctx: Context, config: dict[str, Any], scope: Scope) -> Any:
        for i, case in enumerate(config["cases"]):
            if evaluate_condition(case, scope, f"config['cases'][{i}]"):
                return Result(ctx.input, case["name"])
        return Result(ctx.input, config.get("default", "default"))
