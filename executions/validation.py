"""Whole-graph validation of a workflow document (no ORM).

Field shapes are checked by the API serializers first; this module checks what needs the
whole document, and reports every problem at once, each naming the node or connection.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from executions.graph import find_cycle
from executions.nodes import get_node_type, validate_config


def _conn_label(i: int, c: Mapping[str, Any]) -> str:
    branch = f" [{c['branch']}]" if c.get("branch") else ""
    return f"connection {i} ({c.get('source')} -> {c.get('target')}, {c.get('type', 'success')}{branch})"


def validate_graph(
    nodes: Sequence[Mapping[str, Any]], connections: Sequence[Mapping[str, Any]]
) -> dict[str, list[str]]:
    """Return ``{"nodes": [...], "connections": [...]}`` with every problem found (empty lists
    are dropped), or ``{}`` when the graph is valid."""
    node_errors: list[str] = []
    conn_errors: list[str] = []

    if not nodes:
        node_errors.append("a workflow needs at least one node")

    keys: list[str] = []
    seen: set[str] = set()
    for i, n in enumerate(nodes):
        key = n["key"]
        if key in seen:
            node_errors.append(f"node {i} ({key!r}): duplicate key {key!r}")
        seen.add(key)
        keys.append(key)
        if get_node_type(n["type"]) is None:
            node_errors.append(f"node {key!r}: unknown type {n['type']!r}")
            continue
        for problem in validate_config(n["type"], n.get("config") or {}):
            node_errors.append(f"node {key!r}: {problem}")

    edge_seen: dict[tuple, int] = {}
    edges: list[tuple[str, str]] = []
    for i, c in enumerate(connections):
        label = _conn_label(i, c)
        ok = True
        for end in ("source", "target"):
            if c[end] not in seen:
                conn_errors.append(f"{label}: {end} {c[end]!r} is not a node of this workflow")
                ok = False
        if c["source"] == c["target"]:
            conn_errors.append(f"{label}: a node cannot connect to itself")
            ok = False
        if c.get("type", "success") == "error" and c.get("branch"):
            conn_errors.append(f"{label}: only success connections can carry a branch")
        ident = (c["source"], c["target"], c.get("type", "success"), c.get("branch") or None)
        if ident in edge_seen:
            conn_errors.append(f"{label}: duplicates connection {edge_seen[ident]}")
            ok = False
        else:
            edge_seen[ident] = i
        if ok:
            edges.append((c["source"], c["target"]))

    cycle = find_cycle(keys, edges)
    if cycle:
        conn_errors.append("cycle: " + " -> ".join(cycle))

    errors = {}
    if node_errors:
        errors["nodes"] = node_errors
    if conn_errors:
        errors["connections"] = conn_errors
    return errors
