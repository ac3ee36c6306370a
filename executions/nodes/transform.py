"""``transform``: build an output object from templates and JMESPath expressions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from executions.nodes.base import Context, register
from executions.nodes.templating import Scope, TemplatedNodeType


@register
class Transform(TemplatedNodeType):
    type = "transform"
    pure = True
    description = (
        "Builds an output object: each value of `fields` is a Jinja2 template (one {{ expression }} "
        'keeps its JSON type), a {"jmespath": ...} expression, or a literal. With keep_input the '
        "fields are laid over the input object."
    )
    config_schema = {
        "type": "object",
        "properties": {
            "fields": {"type": "object", "minProperties": 1},
            "keep_input": {"type": "boolean", "default": False},
        },
        "required": ["fields"],
        "additionalProperties": False,
    }

    def execute(self, ctx: Context, config: dict[str, Any], scope: Scope) -> Any:
        fields = config["fields"]
        if config.get("keep_input") and isinstance(ctx.input, Mapping):
            return {**ctx.input, **fields}
        return fields
