"""Server-side SVG pictures of a workflow graph and of an execution's node-run timeline.

Layout: grandalf's Sugiyama (layered, the algorithm Graphviz's ``dot`` uses) in pure Python, so
a machine without the ``dot`` binary draws the same picture. Rendering: drawsvg. Both are
deterministic for a given document: nodes and edges are fed in document order and nothing is
iterated out of a hash-ordered set, so the same execution always renders the same bytes.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import drawsvg
from grandalf.graphs import Edge as GEdge
from grandalf.graphs import Graph as GGraph
from grandalf.graphs import Vertex
from grandalf.layouts import SugiyamaLayout

NODE_W, NODE_H = 150, 44
X_SPACE, Y_SPACE = 28, 46
MARGIN = 16
COMPONENT_GAP = 40

# Fill colours by node-run status; "none" is a node that has no run (a workflow picture, or a
# node the execution never reached).
STATUS_COLOURS: dict[str, str] = {
    "none": "#ffffff",
    "pending": "#f3f4f6",
    "queued": "#dbeafe",
    "running": "#93c5fd",
    "retrying": "#fde68a",
    "succeeded": "#bbf7d0",
    "failed": "#fecaca",
    "skipped": "#d1d5db",
    "cancelled": "#e9d5ff",
    "timed_out": "#fed7aa",
}
STROKE = {"success": "#4b5563", "error": "#dc2626"}


class _View:
    """The view object grandalf expects on every vertex: a size in, a centre out."""

    def __init__(self, w: float, h: float):
        self.w, self.h = w, h
        self.xy: tuple[float, float] = (0.0, 0.0)


class _EdgeView:
    def __init__(self) -> None:
        self.pts: list[tuple[float, float]] = []

    def setpath(self, pts: list[tuple[float, float]]) -> None:
        self.pts = [tuple(p) for p in pts]


@dataclass(frozen=True)
class Placed:
    """A laid-out graph: node centres and edge polylines, in SVG coordinates."""

    width: float
    height: float
    nodes: dict[str, tuple[float, float]]
    edges: list[tuple[dict[str, Any], list[tuple[float, float]]]]


def layout(nodes: Sequence[Mapping[str, Any]], connections: Sequence[Mapping[str, Any]]) -> Placed:
    """Layered layout, top to bottom. Each weakly connected component is laid out on its own
    and the components are set side by side."""
    keys = [n["key"] for n in nodes]
    vertices = {k: Vertex(k) for k in keys}
    for v in vertices.values():
        v.view = _View(NODE_W, NODE_H)
    g_edges: list[tuple[dict[str, Any], GEdge]] = []
    for c in connections:
        if (
            c.get("source") in vertices
            and c.get("target") in vertices
            and c["source"] != c["target"]
        ):
            e = GEdge(vertices[c["source"]], vertices[c["target"]])
            e.view = _EdgeView()
            g_edges.append((dict(c), e))
    graph = GGraph(list(vertices.values()), [e for _, e in g_edges])

    centres: dict[str, tuple[float, float]] = {}
    offset_x = float(MARGIN)
    height = 0.0
    for component in graph.C:
        sug = SugiyamaLayout(component)
        sug.xspace, sug.yspace = X_SPACE, Y_SPACE
        # Roots in document order, so the layout does not depend on set iteration.
        roots = [v for v in component.sV if not v.e_in()]
        sug.init_all(roots=roots or None)
        sug.draw()
        xs = [v.view.xy[0] for v in component.sV]
        ys = [v.view.xy[1] for v in component.sV]
        min_x, min_y = min(xs) - NODE_W / 2, min(ys) - NODE_H / 2
        dx, dy = offset_x - min_x, MARGIN - min_y
        for v in component.sV:
            centres[v.data] = (v.view.xy[0] + dx, v.view.xy[1] + dy)
        for _, e in g_edges:
            if e.v[0] in component.sV:
                e.view.pts = [(x + dx, y + dy) for x, y in e.view.pts]
        offset_x += (max(xs) - min(xs)) + NODE_W + COMPONENT_GAP
        height = max(height, (max(ys) - min(ys)) + NODE_H + 2 * MARGIN)
    width = offset_x - COMPONENT_GAP + MARGIN if centres else 2 * MARGIN
    return Placed(
        width=round(width, 1),
        height=round(max(height, 2 * MARGIN), 1),
        nodes=centres,
        edges=[(c, e.view.pts or [centres[c["source"]], centres[c["target"]]]) for c, e in g_edges],
    )


def _attr(value: object) -> str:
    # drawsvg escapes text content but writes attribute values as given: escape them here, as
    # node keys and statuses come from user documents.
    return html.escape(str(value), quote=True)


def _css(value: object) -> str:
    return re.sub(r"[^a-z0-9_-]", "", str(value).lower()) or "none"


ARROW_LENGTH, ARROW_HALF_WIDTH = 9.0, 4.5


def _arrowhead(
    before: tuple[float, float], tip: tuple[float, float]
) -> tuple[list[float], tuple[float, float]]:
    """A triangle pointing along ``before -> tip`` with its point at ``tip``; returns its
    corners (flat) and the middle of its base, where the line should stop."""
    dx, dy = tip[0] - before[0], tip[1] - before[1]
    length = math.hypot(dx, dy) or 1.0
    ux, uy = dx / length, dy / length
    bx, by = tip[0] - ux * ARROW_LENGTH, tip[1] - uy * ARROW_LENGTH
    px, py = -uy * ARROW_HALF_WIDTH, ux * ARROW_HALF_WIDTH
    corners = [tip[0], tip[1], bx + px, by + py, bx - px, by - py]
    return [round(c, 1) for c in corners], (bx, by)


def _clip(text: str, limit: int = 20) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def graph_svg(
    graph_doc: Mapping[str, Any],
    runs: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """The workflow graph as an SVG document.

    ``runs`` maps a node key to its run (``status``, ``attempts``): nodes are filled by status,
    the status is written in the node and in its ``<title>`` (the hover text). Without runs the
    picture shows the workflow alone.
    """
    nodes = list(graph_doc.get("nodes") or [])
    connections = list(graph_doc.get("connections") or [])
    placed = layout(nodes, connections)
    d = drawsvg.Drawing(placed.width, placed.height)
    d.append(drawsvg.Raw("<style>text{font-family:sans-serif}</style>"))

    for conn, pts in placed.edges:
        kind = conn.get("type", "success")
        colour = STROKE.get(kind, STROKE["success"])
        # End the line on the target box's top edge, not its centre, so the arrow shows.
        (sx, sy), (tx, ty) = placed.nodes[conn["source"]], placed.nodes[conn["target"]]
        path = [(sx, sy + NODE_H / 2), *pts[1:-1], (tx, ty - NODE_H / 2)]
        # The arrowhead is drawn as a triangle rather than an SVG marker: renderers disagree
        # on marker orientation, a polygon is drawn the same everywhere.
        head, base = _arrowhead(path[-2], path[-1])
        flat = [round(c, 1) for p in [*path[:-1], base] for c in p]
        edge = drawsvg.Group(**{"class": f"edge edge-{_css(kind)}"})
        label = f"{conn['source']} → {conn['target']} ({kind}"
        label += f", branch {conn['branch']})" if conn.get("branch") else ")"
        edge.append_title(label)
        edge.append(
            drawsvg.Lines(
                *flat,
                close=False,
                fill="none",
                stroke=colour,
                stroke_width=1.5,
                stroke_dasharray="5,3" if kind == "error" else None,
            )
        )
        edge.append(drawsvg.Lines(*head, close=True, fill=colour, stroke="none"))
        d.append(edge)
        if conn.get("branch"):
            mx, my = path[len(path) // 2 - 1] if len(path) > 2 else ((sx + tx) / 2, (sy + ty) / 2)
            d.append(
                drawsvg.Text(
                    _clip(conn["branch"], 16), 10, round(mx + 4, 1), round(my, 1), fill=colour
                )
            )

    runs = runs or {}
    for n in nodes:
        key = n["key"]
        cx, cy = placed.nodes[key]
        run = runs.get(key)
        status = str(run.get("status")) if run else "none"
        group = drawsvg.Group(
            **{
                "class": f"node status-{_css(status)}",
                "data-node": _attr(key),
                "data-status": _attr(status),
            }
        )
        title = f"{key} ({n.get('type', '')})"
        if run:
            title += f": {status}, attempts {run.get('attempts', 0)}"
        group.append_title(title)
        group.append(
            drawsvg.Rectangle(
                round(cx - NODE_W / 2, 1),
                round(cy - NODE_H / 2, 1),
                NODE_W,
                NODE_H,
                rx=6,
                fill=STATUS_COLOURS.get(status, STATUS_COLOURS["none"]),
                stroke="#374151",
                stroke_width=1,
            )
        )
        group.append(
            drawsvg.Text(
                _clip(key),
                13,
                round(cx, 1),
                round(cy - 4, 1),
                text_anchor="middle",
                font_weight="bold",
            )
        )
        sub = f"{n.get('type', '')} · {status}" if run else str(n.get("type", ""))
        group.append(
            drawsvg.Text(
                _clip(sub, 24),
                10,
                round(cx, 1),
                round(cy + 12, 1),
                text_anchor="middle",
                fill="#374151",
            )
        )
        d.append(group)
    return d.as_svg()


TIMELINE_ROW = 22
TIMELINE_LABEL = 150
TIMELINE_WIDTH = 560


def timeline_svg(runs: Sequence[Mapping[str, Any]], *, origin: datetime | None = None) -> str:
    """A bar per node run: a light bar from queued to started (waiting for a worker) and a
    coloured bar from started to finished (running), with attempts in the label and title."""
    stamps = [r[k] for r in runs for k in ("queued_at", "started_at", "finished_at") if r.get(k)]
    if origin is None and stamps:
        origin = min(stamps)
    end = max(stamps) if stamps else origin
    span = max((end - origin).total_seconds(), 0.001) if origin and end else 0.001
    scale = TIMELINE_WIDTH / span
    height = MARGIN * 2 + TIMELINE_ROW * (len(runs) + 1)
    d = drawsvg.Drawing(TIMELINE_LABEL + TIMELINE_WIDTH + 2 * MARGIN, height)
    d.append(drawsvg.Raw("<style>text{font-family:sans-serif}</style>"))

    def x_of(t: datetime) -> float:
        return round(MARGIN + TIMELINE_LABEL + (t - origin).total_seconds() * scale, 1)

    axis_y = MARGIN + TIMELINE_ROW * len(runs) + 4
    d.append(
        drawsvg.Line(
            MARGIN + TIMELINE_LABEL,
            axis_y,
            MARGIN + TIMELINE_LABEL + TIMELINE_WIDTH,
            axis_y,
            stroke="#9ca3af",
        )
    )
    d.append(drawsvg.Text("0 s", 10, MARGIN + TIMELINE_LABEL, axis_y + 14, fill="#374151"))
    d.append(
        drawsvg.Text(
            f"{span:.3f} s",
            10,
            MARGIN + TIMELINE_LABEL + TIMELINE_WIDTH,
            axis_y + 14,
            text_anchor="end",
            fill="#374151",
        )
    )

    for i, r in enumerate(runs):
        y = MARGIN + i * TIMELINE_ROW
        status = str(r.get("status", "none"))
        row = drawsvg.Group(
            **{"class": f"run status-{_css(status)}", "data-node": _attr(r["node"])}
        )
        queued, started, finished = r.get("queued_at"), r.get("started_at"), r.get("finished_at")
        title = f"{r['node']}: {status}, attempts {r.get('attempts', 0)}"
        for label, t in (("queued", queued), ("started", started), ("finished", finished)):
            if t:
                title += f"; {label} {t.isoformat(timespec='milliseconds')}"
        row.append_title(title)
        row.append(
            drawsvg.Text(_clip(f"{r['node']} ×{r.get('attempts', 0)}", 22), 11, MARGIN, y + 14)
        )
        if origin is not None and queued and started:
            row.append(
                drawsvg.Rectangle(
                    x_of(queued), y + 4, max(x_of(started) - x_of(queued), 1), 14, fill="#e5e7eb"
                )
            )
        if origin is not None and started:
            stop = finished or end
            row.append(
                drawsvg.Rectangle(
                    x_of(started),
                    y + 4,
                    max(x_of(stop) - x_of(started), 2),
                    14,
                    fill=STATUS_COLOURS.get(status, STATUS_COLOURS["none"]),
                    stroke="#374151",
                    stroke_width=0.5,
                )
            )
        elif origin is not None and finished:
            # Never ran (skipped, cancelled before it started): a tick when it was decided.
            row.append(
                drawsvg.Rectangle(x_of(finished) - 1, y + 2, 3, 18, fill="#6b7280", stroke="none")
            )
        d.append(row)
    return d.as_svg()
