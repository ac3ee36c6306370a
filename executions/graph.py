"""The workflow graph and the engine's routing rules, as pure functions (no ORM, no I/O).

Used when a workflow is saved (validation, cycle detection), when an execution starts (the
snapshot is checked again) and by the scheduler for every finished node: which connections
fired, whether a successor is ready, skipped or still waiting, and what its input is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

SUCCESS = "success"
ERROR = "error"
CONNECTION_TYPES = (SUCCESS, ERROR)
# The branch a wait_for_event node selects when it gives up. A time-out is not the main path:
# only connections that name this branch fire for it, not the unbranched ones.
TIMEOUT_BRANCH = "timeout"

# Node run statuses as plain strings, so this module stays free of Django.
FINISHED = frozenset({"succeeded", "failed", "skipped", "cancelled"})


@dataclass(frozen=True)
class NodeSpec:
    key: str
    type: str
    name: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)
    retry: Mapping[str, Any] = field(default_factory=dict)
    timeout_seconds: int = 300
    # {"name": ..., "key": <template or None>}: a start token is taken before the node runs.
    rate_limit: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    type: str = SUCCESS
    branch: str | None = None


class Graph:
    """An immutable, indexed view of a workflow definition."""

    def __init__(self, nodes: Iterable[NodeSpec], edges: Iterable[Edge]):
        self.nodes: dict[str, NodeSpec] = {n.key: n for n in nodes}
        self.edges: tuple[Edge, ...] = tuple(edges)
        self.outgoing: dict[str, list[Edge]] = {k: [] for k in self.nodes}
        self.incoming: dict[str, list[Edge]] = {k: [] for k in self.nodes}
        for e in self.edges:
            self.outgoing[e.source].append(e)
            self.incoming[e.target].append(e)
        self._preds = {k: sorted({e.source for e in v}) for k, v in self.incoming.items()}
        self._succs = {k: sorted({e.target for e in v}) for k, v in self.outgoing.items()}

    @classmethod
    def from_snapshot(cls, doc: Mapping[str, Any]) -> Graph:
        nodes = [
            NodeSpec(
                key=n["key"],
                type=n["type"],
                name=n.get("name", ""),
                config=n.get("config") or {},
                retry=n.get("retry") or {},
                timeout_seconds=int(n.get("timeout_seconds", 300)),
                rate_limit=n.get("rate_limit") or None,
            )
            for n in doc["nodes"]
        ]
        edges = [
            Edge(c["source"], c["target"], c.get("type", SUCCESS), c.get("branch"))
            for c in doc.get("connections", [])
        ]
        return cls(nodes, edges)

    def predecessors(self, key: str) -> list[str]:
        return self._preds[key]

    def successors(self, key: str) -> list[str]:
        return self._succs[key]

    def start_keys(self) -> list[str]:
        return [k for k in self.nodes if not self.incoming[k]]

    def sink_keys(self) -> list[str]:
        return [k for k in self.nodes if not self.outgoing[k]]

    def ends_in_one_statement(self, key: str) -> bool:
        """Whether a success of ``key`` can be recorded together with what it changes by one
        statement: every successor that has ``key`` as its only predecessor is reached by a
        plain success connection (it runs; nothing to skip), joins being only counted down;
        or ``key`` is the workflow's only sink (its success completes the execution)."""
        if not self._succs[key]:
            return self.sink_keys() == [key]
        return all(
            len(self._preds[e.target]) > 1 or (e.type == SUCCESS and e.branch is None)
            for e in self.outgoing[key]
        )

    def has_error_route(self, key: str) -> bool:
        return any(e.type == ERROR for e in self.outgoing[key])

    def topological_order(self) -> list[str]:
        indegree = {k: len(self._preds[k]) for k in self.nodes}
        ready = [k for k in self.nodes if indegree[k] == 0]
        order: list[str] = []
        while ready:
            k = ready.pop(0)
            order.append(k)
            for s in self._succs[k]:
                indegree[s] -= 1
                if indegree[s] == 0:
                    ready.append(s)
        return order


def find_cycle(keys: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[str] | None:
    """Return one cycle as a closed path ``[a, b, c, a]``, or None when the graph is acyclic.

    Iterative depth-first search (no recursion limit on long chains), visiting nodes in the
    order given so the cycle reported is stable for a given document.
    """
    adjacency: dict[str, list[str]] = {k: [] for k in keys}
    for source, target in edges:
        if source in adjacency and target in adjacency:
            adjacency[source].append(target)
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(adjacency, WHITE)
    for root in adjacency:
        if color[root] != WHITE:
            continue
        path: list[str] = [root]
        iters = [iter(adjacency[root])]
        color[root] = GREY
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                color[path.pop()] = BLACK
                iters.pop()
                continue
            if color[nxt] == GREY:
                return path[path.index(nxt) :] + [nxt]
            if color[nxt] == WHITE:
                color[nxt] = GREY
                path.append(nxt)
                iters.append(iter(adjacency[nxt]))
    return None


def is_error_output(output: Any) -> bool:
    """The generic error convention: an object with ``error`` true, ``success`` false,
    ``status`` "failed", or ``statusCode``/``status_code`` of 400 or more."""
    if not isinstance(output, Mapping):
        return False
    if output.get("error") is True or output.get("success") is False:
        return True
    if output.get("status") == "failed":
        return True
    for name in ("statusCode", "status_code"):
        code = output.get(name)
        if isinstance(code, int | float) and not isinstance(code, bool) and code >= 400:
            return True
    return False


@dataclass(frozen=True)
class Outcome:
    """What a finished node run left behind, as far as routing cares."""

    status: str
    branch: str | None = None
    output: Any = None


def edge_fires(edge: Edge, outcome: Outcome) -> bool:
    if edge.type == ERROR:
        return outcome.status == "failed"
    if outcome.status != "succeeded":
        return False
    if edge.branch is None:
        return outcome.branch != TIMEOUT_BRANCH
    return edge.branch == outcome.branch


Verdict = Literal["wait", "run", "skip"]


def decide(graph: Graph, target: str, outcomes: Mapping[str, Outcome]) -> tuple[Verdict, list[str]]:
    """Whether ``target`` can run given its predecessors' outcomes.

    ``outcomes`` holds the predecessors that are finished. Returns ("wait", []) while any is
    not, ("skip", []) when all are finished and no incoming connection fired, and
    ("run", fired_keys) otherwise, fired_keys in a stable order.
    """
    preds = graph.predecessors(target)
    if any(p not in outcomes or outcomes[p].status not in FINISHED for p in preds):
        return "wait", []
    fired = sorted({e.source for e in graph.incoming[target] if edge_fires(e, outcomes[e.source])})
    return ("run", fired) if fired else ("skip", [])


def node_input(fired: list[str], outputs: Mapping[str, Any]) -> Any:
    """The input of a node whose incoming connections fired from ``fired``."""
    if len(fired) == 1:
        return outputs.get(fired[0])
    return {k: outputs.get(k) for k in fired}


def initial_plan(graph: Graph, reused: Mapping[str, Outcome], execution_input: Any):
    """Which nodes to queue (with their input) and which to skip when an execution starts,
    given the node runs it reuses from an earlier execution (``from_failed`` retries)."""
    known = dict(reused)
    queue: dict[str, Any] = {}
    skip: list[str] = []
    for key in graph.topological_order():
        if key in known:
            continue
        if not graph.predecessors(key):
            queue[key] = execution_input
            continue
        verdict, fired = decide(graph, key, known)
        if verdict == "run":
            queue[key] = node_input(fired, {k: o.output for k, o in known.items()})
        elif verdict == "skip":
            known[key] = Outcome("skipped")
            skip.append(key)
    return queue, skip
