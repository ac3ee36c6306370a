"""Workflow snapshots as Graph objects, cached per worker process by snapshot id.

Snapshots are immutable rows, so the cache can never be stale; it is bounded, and keyed by
workflow version rather than by execution, so it holds no per-execution state."""

from __future__ import annotations

from functools import lru_cache

from executions.graph import Graph
from executions.models import WorkflowVersion


@lru_cache(maxsize=256)
def graph_for(snapshot_id: int) -> Graph:
    doc = WorkflowVersion.objects.values_list("graph", flat=True).get(id=snapshot_id)
    return Graph.from_snapshot(doc)
