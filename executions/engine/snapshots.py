"""Workflow snapshots as Graph objects, cached per process by snapshot id.

Snapshots are immutable rows, so the cache can never be stale; it is bounded (least recently
used out first), and keyed by workflow version rather than by execution, so it holds no
per-execution state. A caller that has the snapshot row already (the trigger path) passes it
and costs no query."""

from __future__ import annotations

import threading
from collections import OrderedDict

from executions.graph import Graph
from executions.models import WorkflowVersion

MAX_GRAPHS = 256

_graphs: OrderedDict[int, Graph] = OrderedDict()
_lock = threading.Lock()


def graph_for(snapshot_id: int, snapshot: WorkflowVersion | None = None) -> Graph:
    """The graph of snapshot ``snapshot_id``; ``snapshot`` is that row when already loaded."""
    with _lock:
        graph = _graphs.get(snapshot_id)
        if graph is not None:
            _graphs.move_to_end(snapshot_id)
            return graph
    if snapshot is not None and snapshot.id == snapshot_id:
        doc = snapshot.graph
    else:
        doc = WorkflowVersion.objects.values_list("graph", flat=True).get(id=snapshot_id)
    graph = Graph.from_snapshot(doc)
    with _lock:
        _graphs[snapshot_id] = graph
        while len(_graphs) > MAX_GRAPHS:
            _graphs.popitem(last=False)
    return graph
