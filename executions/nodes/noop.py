from __future__ import annotations

from executions.nodes.base import Context, NodeType, register


@register
class Noop(NodeType):
    type = "noop"
    pure = True
    description = "Passes its input through unchanged."
    detects_error_output = False

    def run(self, ctx: Context):
        return ctx.input
