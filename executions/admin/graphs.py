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
from datetime import datetime, timedelta
from typing import Any

import drawsvg
from grandalf.graphs import Edge as GEdge
from grandalf.graphs import Graph as GGraph
from grandalf.graphs import Vertex
from grandalf.layouts import SugiyamaLayout

NODE_W, NODE_H = 160, 54
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
    "paused": "#e0e7ff",
    # Never started because the execution stopped first.
    "not reached": "#f9fafb",
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


# The config field that says most about a node, by type (shown on its box).
_KEY_CONFIG = {
    "http_request": ("method", "url"),
    "delay": ("seconds", "until"),
    "condition": ("expression",),
    "switch": ("expression", "value"),
    "python": ("code",),
    "transform": ("template", "expression"),
    "sub_workflow": ("workflow",),
    "stop_and_error": ("message",),
    "merge": ("mode",),
}


def key_config(node: Mapping[str, Any]) -> str:
    config = node.get("config") or {}
    if not isinstance(config, Mapping):
        return ""
    names = _KEY_CONFIG.get(str(node.get("type")), ())
    parts = [str(config[n]) for n in names if isinstance(config.get(n), str | int | float)]
    if not parts and config:
        first = next(iter(config))
        value = config[first]
        parts = [f"{first}={value}" if isinstance(value, str | int | float | bool) else first]
    return " ".join(" ".join(parts).split())


def _taken(conn: Mapping[str, Any], runs: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether a connection fired in this execution (the same rule the engine routes by)."""
    run = runs.get(conn["source"])
    if not run:
        return False
    status = run.get("status")
    if conn.get("type", "success") == "error":
        return status == "failed"
    if status != "succeeded":
        return False
    return not conn.get("branch") or conn.get("branch") == run.get("branch")


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
    d = drawsvg.Drawing(placed.width, placed.height, **{"class": "wc-graph-svg"})
    d.append(drawsvg.Raw("<style>text{font-family:sans-serif}</style>"))
    runs = runs or {}
    labels: list[Any] = []

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
        attrs = {"class": f"edge edge-{_css(kind)}"}
        if runs:
            # The branches this execution took stand out; the others fade.
            attrs["data-taken"] = "1" if _taken(conn, runs) else "0"
            attrs["opacity"] = "1" if attrs["data-taken"] == "1" else "0.35"
        edge = drawsvg.Group(**attrs)
        label = f"{conn['source']} → {conn['target']} ({kind}"
        label += f", branch {conn['branch']})" if conn.get("branch") else ")"
        edge.append_title(label)
        edge.append(
            drawsvg.Lines(
                *flat,
                close=False,
                fill="none",
                stroke=colour,
                stroke_width=2.5 if attrs.get("data-taken") == "1" else 1.5,
                stroke_dasharray="5,3" if kind == "error" else None,
            )
        )
        edge.append(drawsvg.Lines(*head, close=True, fill=colour, stroke="none"))
        d.append(edge)
        if conn.get("branch"):
            # Beside the line, not on it: right of its midpoint, with a halo in the page's
            # background colour so a crossing line does not run through the text. Labels are
            # drawn after every line.
            mx, my = path[len(path) // 2 - 1] if len(path) > 2 else ((sx + tx) / 2, (sy + ty) / 2)
            labels.append(
                drawsvg.Text(
                    _clip(conn["branch"], 16),
                    10,
                    round(mx + 7, 1),
                    round(my + 3, 1),
                    fill=colour,
                    **{"class": "edge-label", "paint-order": "stroke", "stroke-width": 3},
                    stroke="#ffffff",
                )
            )
    for label in labels:
        d.append(label)

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
                _clip(str(n.get("name") or key)),
                13,
                round(cx, 1),
                round(cy - 9, 1),
                text_anchor="middle",
                font_weight="bold",
                fill="#111827",
            )
        )
        sub = f"{n.get('type', '')} · {status}" if run else str(n.get("type", ""))
        group.append(
            drawsvg.Text(
                _clip(sub, 26),
                10,
                round(cx, 1),
                round(cy + 5, 1),
                text_anchor="middle",
                fill="#374151",
            )
        )
        config = key_config(n)
        if config:
            group.append(
                drawsvg.Text(
                    _clip(config, 28),
                    9,
                    round(cx, 1),
                    round(cy + 18, 1),
                    text_anchor="middle",
                    fill="#4b5563",
                    font_family="monospace",
                )
            )
        d.append(group)
    return d.as_svg()


TIMELINE_ROW = 22
TIMELINE_LABEL = 150
TIMELINE_WIDTH = 560


def timeline_svg(
    runs: Sequence[Mapping[str, Any]],
    *,
    origin: datetime | None = None,
    now: datetime | None = None,
) -> str:
    """A bar per node run, in the order given (graph order): a grey bar from queued to started
    (waiting for a worker), an amber one for the retry backoff before the last attempt, and
    a coloured bar from started to finished (running), with attempts in the label and title.
    ``now`` extends the bars of runs still going (a live execution)."""
    stamps = [r[k] for r in runs for k in ("queued_at", "started_at", "finished_at") if r.get(k)]
    if now is not None and any(r.get("started_at") and not r.get("finished_at") for r in runs):
        stamps.append(now)
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
            f"{span * 1000:.0f} ms" if span < 1 else f"{span:.2f} s",
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
            drawsvg.Text(
                _clip(f"{r['node']} ×{r.get('attempts', 0)}", 22),
                11,
                MARGIN,
                y + 14,
                **{"class": "wc-label"},
            )
        )
        if r.get("display_status") == "not reached":
            row.append(
                drawsvg.Text(
                    "not reached",
                    10,
                    MARGIN + TIMELINE_LABEL,
                    y + 14,
                    fill="#6b7280",
                    **{"class": "wc-label not-reached"},
                )
            )
            d.append(row)
            continue
        if origin is not None and queued and started:
            row.append(
                drawsvg.Rectangle(
                    x_of(queued),
                    y + 4,
                    max(x_of(started) - x_of(queued), 1),
                    14,
                    fill="#e5e7eb",
                    **{"class": "queue-wait"},
                )
            )
            delays = r.get("retry_delays") or []
            if delays:
                # The backoff before the last attempt ends where that attempt starts.
                wait_from = max(queued, started - timedelta(seconds=float(delays[-1])))
                row.append(
                    drawsvg.Rectangle(
                        x_of(wait_from),
                        y + 4,
                        max(x_of(started) - x_of(wait_from), 1),
                        14,
                        fill="#fbbf24",
                        fill_opacity=0.6,
                        **{"class": "retry-wait"},
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
