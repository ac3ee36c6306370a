"""Workflow snapshots as Graph objects, cached per process by snapshot id, and the snapshot
rows themselves by (workflow, version) for the trigger path.

Snapshots are immutable rows, so the caches can never be stale; they are bounded (least
recently used out first), and keyed by workflow version rather than by execution, so they hold
no per-execution state. A caller that has the snapshot row already passes it and costs no
query."""

from __future__ import annotations

import threading
from collections import OrderedDict

from executions.graph import Graph
from executions.models import WorkflowVersion

MAX_GRAPHS = 256

_graphs: OrderedDict[int, Graph] = OrderedDict()
_versions: OrderedDict[tuple, WorkflowVersion] = OrderedDict()
_lock = threading.Lock()


def version_for(workflow_id, version: int) -> WorkflowVersion:
    """The snapshot row of ``version`` of a workflow (a new version is a new row: an edit
    never changes a cached one)."""
    key = (str(workflow_id), version)
    with _lock:
        row = _versions.get(key)
        if row is not None:
            _versions.move_to_end(key)
            return row
    row = WorkflowVersion.objects.get(workflow_id=workflow_id, version=version)
    with _lock:
        _versions[key] = row
        while len(_versions) > MAX_GRAPHS:
            _versions.popitem(last=False)
    return row


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
