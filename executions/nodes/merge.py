"""``merge``: an explicit join of the branches that reach it.

The engine already waits until every predecessor has finished and gives a node with several
fired predecessors ``{predecessor: output}`` as input, but the bare output when only one
fired. Merge always answers in one shape: an object keyed by predecessor (default), or a
list in the order of the workflow's connections (``mode: "list"``). Predecessors that were
skipped, or failed without an error connection to here, are left out.
"""

from __future__ import annotations

from typing import Any

from executions.nodes.base import Context, NodeType, register


@register
class Merge(NodeType):
    type = "merge"
    pure = True
    description = (
        'Joins the branches that reach it: output {predecessor: output} (mode "object", the '
        'default) or a list of outputs in connection order (mode "list").'
    )
    config_schema = {
        "type": "object",
        "properties": {"mode": {"enum": ["object", "list"], "default": "object"}},
        "additionalProperties": False,
    }
    detects_error_output = False

    def run(self, ctx: Context) -> Any:
        keyed = self._keyed_input(ctx)
        if ctx.config.get("mode", "object") == "list":
            return list(keyed.values())
        return keyed

    def _keyed_input(self, ctx: Context) -> dict[str, Any]:
        if not ctx.predecessors:  # a start node merges nothing but its input
            return {"input": ctx.input}
        fired = ctx.fired
        if len(fired) == 1:
            return {fired[0]: ctx.input}
        if isinstance(ctx.input, dict):
            return {p: ctx.input.get(p) for p in fired}
        return {p: None for p in fired}
