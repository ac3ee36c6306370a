"""``merge``: an explicit join of the branches that reach it.

The engine already waits until every predecessor has finished and gives a node with several
fired predecessors ``{predecessor: output}`` as input, but the bare output when only one
fired. Merge always answers in one shape: an object keyed by predecessor (default), or a
list in the order of the workflow's connections (``mode: "list"``). Predecessors that were
skipped, or failed without an error connection to here, are left out.
"""

from __future__ import annotations

from typing import Any

from executions.graph import Outcome, edge_fires
from executions.nodes.base import Context, NodeType, register


@register
class Merge(NodeType):
    type = "merge"
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
        from executions.engine.snapshots import graph_for
        from executions.models import Execution, NodeRun

        snapshot_id = Execution.objects.values_list("snapshot_id", flat=True).get(
            id=ctx.execution_id
        )
        graph = graph_for(snapshot_id)
        key = ctx.node.key
        ordered = list(dict.fromkeys(e.source for e in graph.incoming[key]))
        if not ordered:  # a start node merges nothing but its input
            return {"input": ctx.input}
        # Which predecessors fired, decided exactly as the scheduler did when it queued us.
        outcomes = {
            node: Outcome(status, branch)
            for node, status, branch in NodeRun.objects.filter(
                execution_id=ctx.execution_id, node__in=ordered
            ).values_list("node", "status", "branch")
        }
        fired = [
            p
            for p in ordered
            if p in outcomes
            and any(edge_fires(e, outcomes[p]) for e in graph.incoming[key] if e.source == p)
        ]
        if len(fired) == 1:
            return {fired[0]: ctx.input}
        if isinstance(ctx.input, dict):
            return {p: ctx.input.get(p) for p in fired}
        return {p: None for p in fired}
