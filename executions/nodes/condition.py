"""``condition``: route on a boolean expression (branch "true" or "false")."""

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


@register
class Condition(TemplatedNodeType):
    type = "condition"
    pure = True
    description = (
        "Evaluates a Jinja expression or a JMESPath expression and passes its input on, selecting "
        'the branch "true" or "false": only connections with that branch fire.'
    )
    config_schema = {
        "type": "object",
        "properties": dict(EXPRESSION_PROPERTIES),
        **ONE_EXPRESSION,
        "additionalProperties": False,
    }
    raw_keys = frozenset({"expression", "jmespath"})
    detects_error_output = False

    def check_config(self, config: Mapping[str, Any]) -> list[str]:
        return expression_errors(config, "config")

    def execute(self, ctx: Context, config: dict[str, Any], scope: Scope) -> Any:
        return Result(ctx.input, "true" if evaluate_condition(config, scope, "config") else "false")
