"""Charts drawn server-side as inline SVG strings, so the report needs no script or CDN.

Every function takes plain numbers and names (names come from clients: all text passes
through :func:`esc`) and returns one ``<svg>`` element sized by its viewBox. Colours
are CSS classes defined in reports/static/report.css. Hover text uses SVG ``<title>``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["cdf_chart", "esc", "graph_chart", "line_chart", "meter", "nice_ticks",
           "scatter_trend", "step_chart", "time_unit", "timeline_chart"]


def esc(value: object) -> str:
    """Text or attribute value, escaped for HTML and SVG (quotes included)."""
    return html.escape(str(value), quote=True)


def _f(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".") if math.isfinite(x) else "0"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2, 5 times a power of ten apart)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks: list[float] = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _label(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def time_unit(span_s: float) -> tuple[float, str]:
    """Seconds per axis unit and its name, so a short run is not drawn in 0.01 minutes."""
    if span_s < 120:
        return 1.0, "s"
    if span_s < 3 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


class _Frame:
    """A plot area inside a chart: maps data to pixels and draws the axes."""

    def __init__(self, width: int, height: int, x_range: tuple[float, float],
                 y_range: tuple[float, float], left: int = 48, bottom: int = 30) -> None:
        self.width, self.height = width, height
        self.left, self.right, self.top, self.bottom = left, 12, 20, bottom
        self.x0, self.x1 = x_range if x_range[1] > x_range[0] else (x_range[0], x_range[0] + 1)
        self.y0, self.y1 = y_range if y_range[1] > y_range[0] else (y_range[0], y_range[0] + 1)

    def x(self, value: float) -> float:
        span = self.width - self.left - self.right
        return self.left + (value - self.x0) / (self.x1 - self.x0) * span

    def y(self, value: float) -> float:
        span = self.height - self.top - self.bottom
        return self.height - self.bottom - (value - self.y0) / (self.y1 - self.y0) * span

    def axes(self, x_label: str, y_label: str, y_format: str = "{:g}") -> str:
        parts = ['<g class="axis">']
        for t in nice_ticks(self.y0, self.y1, 4):
            y = self.y(t)
            parts.append(f'<line class="grid" x1="{self.left}" x2="{self.width - self.right}" '
                         f'y1="{_f(y)}" y2="{_f(y)}"/>'
                         f'<text x="{self.left - 4}" y="{_f(y + 3)}" text-anchor="end">'
                         f'{esc(y_format.format(t))}</text>')
        for t in nice_ticks(self.x0, self.x1, 6):
            x = self.x(t)
            parts.append(f'<text x="{_f(x)}" y="{self.height - self.bottom + 13}" '
                         f'text-anchor="middle">{esc(_label(t))}</text>')
        base = self.height - self.bottom
        parts.append(f'<line x1="{self.left}" x2="{self.width - self.right}" y1="{base}" y2="{base}"/>'
                     f'<text x="{self.width - self.right}" y="{self.height - 2}" text-anchor="end">'
                     f'{esc(x_label)}</text>'
                     f'<text x="4" y="11" class="ylabel">{esc(y_label)}</text></g>')
        return "".join(parts)


def _svg(width: int, height: int, title: str, body: str, cls: str = "chart") -> str:
    return (f'<svg class="{cls}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'xmlns="http://www.w3.org/2000/svg"><title>{esc(title)}</title>{body}</svg>')


def cdf_chart(values: Sequence[float], marks: Mapping[str, float | None],
              unit: str = "s", width: int = 420, height: int = 200) -> str:
    """Empirical CDF as a step line, with labelled vertical marks (e.g. mean, p95)."""
    ordered = sorted(values)
    n = len(ordered)
    frame = _Frame(width, height, (0.0, ordered[-1] * 1.05 if ordered else 1.0), (0.0, 1.0))
    points = [f"{_f(frame.x(0))},{_f(frame.y(0))}"]
    for i, v in enumerate(ordered):
        points.append(f"{_f(frame.x(v))},{_f(frame.y(i / n))}")
        points.append(f"{_f(frame.x(v))},{_f(frame.y((i + 1) / n))}")
    body = [frame.axes(f"JCT ({unit})", "share of sessions", "{:.0%}"),
            f'<polyline class="series s0" points="{" ".join(points)}"/>']
    for i, (name, value) in enumerate(marks.items()):
        if value is None:
            continue
        x = frame.x(value)
        right = x > width * 0.7  # label on the left of marks near the right edge
        body.append(f'<line class="mark" x1="{_f(x)}" x2="{_f(x)}" y1="{frame.top}" '
                    f'y2="{frame.height - frame.bottom}"/><text class="marklabel" '
                    f'x="{_f(x - 3 if right else x + 3)}" text-anchor="{"end" if right else "start"}" '
                    f'y="{frame.top + 10 + 11 * i}">{esc(name)} {value:.2f} {esc(unit)}</text>')
    return _svg(width, height, f"JCT distribution over {n} sessions", "".join(body))


def scatter_trend(points: Sequence[tuple[float, float]], window: int = 9,
                  width: int = 420, height: int = 200) -> str:
    """JCT of each session by its start (time from the first), with a rolling median."""
    if not points:
        return _svg(width, height, "no sessions", "")
    t0 = min(p[0] for p in points)
    unit, name = time_unit(max(p[0] for p in points) - t0)
    xs = [(p[0] - t0) / unit for p in points]
    ys = [p[1] for p in points]
    frame = _Frame(width, height, (0.0, max(xs) or 1.0), (0.0, max(ys) * 1.1 or 1.0))
    body = [frame.axes(f"session start ({name})", "JCT (s)")]
    body += [f'<circle class="dot" cx="{_f(frame.x(x))}" cy="{_f(frame.y(y))}" r="2.5">'
             f'<title>{y:.2f} s</title></circle>' for x, y in zip(xs, ys)]
    ordered = sorted(zip(xs, ys))
    half = window // 2
    rolling = []
    for i, (x, _) in enumerate(ordered):
        near = sorted(y for _, y in ordered[max(0, i - half):i + half + 1])
        rolling.append(f"{_f(frame.x(x))},{_f(frame.y(near[len(near) // 2]))}")
    body.append(f'<polyline class="series s1" points="{" ".join(rolling)}"/>')
    return _svg(width, height, "JCT trend by session start", "".join(body))


def line_chart(series: Mapping[str, Sequence[tuple[float, float]]],
               bands: Sequence[tuple[float, float, str]] = (), y_label: str = "",
               width: int = 420, height: int = 200) -> str:
    """Lines over time (from the first point), y in 0..1, with labelled bands."""
    all_x = [x for pts in series.values() for x, _ in pts] + [t for b in bands for t in b[:2]]
    if not all_x:
        return _svg(width, height, "no data", "")
    t0 = min(all_x)
    unit, unit_name = time_unit(max(all_x) - t0)
    x_max = max([(x - t0) / unit for x in all_x] + [1.0])  # at least one unit: a lone point stays readable
    frame = _Frame(width, height, (0.0, x_max), (0.0, 1.0))
    body: list[str] = []
    for start, end, name in bands:
        x_a, x_b = frame.x((start - t0) / unit), frame.x((end - t0) / unit)
        body.append(f'<rect class="band band-{esc(name)}" x="{_f(x_a)}" y="{frame.top}" '
                    f'width="{_f(max(x_b - x_a, 1))}" height="{frame.height - frame.top - frame.bottom}">'
                    f'<title>{esc(name)}</title></rect>')
    body.append(frame.axes(f"time ({unit_name})", y_label, "{:.0%}"))
    for i, (name, pts) in enumerate(series.items()):
        coords = " ".join(f"{_f(frame.x((x - t0) / unit))},{_f(frame.y(y))}" for x, y in pts)
        body.append(f'<polyline class="series s{i}" points="{coords}"><title>{esc(name)}</title></polyline>')
        body.extend(f'<circle class="series s{i}" cx="{_f(frame.x((x - t0) / unit))}" cy="{_f(frame.y(y))}" r="2.5">'
                    f'<title>{esc(name)}: {y:.0%}</title></circle>' for x, y in pts)
        body.append(f'<text class="legend s{i}" x="{frame.left + 6 + 150 * i}" y="{frame.top + 10}">'
                    f'{esc(name)}</text>')
    return _svg(width, height, y_label or "over time", "".join(body))


def step_chart(points: Sequence[tuple[float, float]], y_label: str,
               width: int = 420, height: int = 160) -> str:
    """A value that changes in steps over time (e.g. replica count)."""
    if not points:
        return _svg(width, height, "no data", "")
    t0 = points[0][0]
    unit, unit_name = time_unit(points[-1][0] - t0)
    xs = [(t - t0) / unit for t, _ in points]
    frame = _Frame(width, height, (0.0, max(xs[-1], 1.0)), (0.0, max(v for _, v in points) + 1))
    coords: list[str] = []
    for i, (x, (_, v)) in enumerate(zip(xs, points)):
        if i:
            coords.append(f"{_f(frame.x(x))},{_f(frame.y(points[i - 1][1]))}")
        coords.append(f"{_f(frame.x(x))},{_f(frame.y(v))}")
    return _svg(width, height, y_label, frame.axes(f"time ({unit_name})", y_label) +
                f'<polyline class="series s0" points="{" ".join(coords)}"/>')


def meter(value: float | None, width: int = 60) -> str:
    """A small inline bar for a share in 0..1 (table cells)."""
    if value is None:
        return ""
    v = min(max(value, 0.0), 1.0)
    return (f'<svg class="meter" viewBox="0 0 {width} 8" width="{width}" height="8" '
            f'aria-hidden="true"><rect class="meter-bg" width="{width}" height="8"/>'
            f'<rect class="meter-fg" width="{_f(v * width)}" height="8"/></svg>')


# --- the workflow graph ------------------------------------------------------------

_NODE_W, _NODE_H, _COL_W, _ROW_H = 132, 40, 190, 70


def graph_chart(graph: Mapping[str, Any], max_nodes: int = 24, uid: str = "g") -> str:
    """Agents as nodes in layers left to right; edges labelled with their probability.

    Fan-out shows as a stacked node with a ``xN`` badge, loops as arcs below (back
    edges) or above a node (self loops). Entry and exit are the small circles.
    """
    nodes = list(graph.get("nodes", []))[:max_nodes]
    names = {n["agent"] for n in nodes}
    columns: dict[int, list[Mapping[str, Any]]] = {}
    for node in nodes:
        columns.setdefault(int(node.get("layer", 0)), []).append(node)
    layers = sorted(columns)
    col_of = {layer: i for i, layer in enumerate(layers)}
    rows = max((len(c) for c in columns.values()), default=1)
    width = 70 + _COL_W * len(layers) + 40
    height = 50 + _ROW_H * rows + 50
    pos: dict[str | None, tuple[float, float]] = {}
    for layer, members in columns.items():
        top = (height - _ROW_H * len(members)) / 2
        for j, node in enumerate(members):
            pos[node["agent"]] = (70 + col_of[layer] * _COL_W + _NODE_W / 2, top + _ROW_H * (j + 0.5))
    entry, exit_ = (20.0, height / 2), (width - 20.0, height / 2)
    arrow = f"arrow-{esc(uid)}"  # ids are per document: one marker per drawn graph
    body: list[str] = [(f'<defs><marker id="{arrow}" viewBox="0 0 8 8" refX="7" refY="4" '
                        'markerUnits="userSpaceOnUse" markerWidth="9" markerHeight="9" '
                        'orient="auto-start-reverse"><path d="M0,0 L8,4 L0,8 z" class="arrowhead"/>'
                        '</marker></defs>')]
    for edge in graph.get("edges", []):
        src, dst = edge.get("src"), edge.get("dst")
        if (src is not None and src not in names) or (dst is not None and dst not in names):
            continue
        a = pos[src] if src is not None else entry
        b = pos[dst] if dst is not None else exit_
        label = f'{edge.get("p", 0):.2f}'
        tip = f'{src or "start"} -> {dst or "end"}: p={edge.get("p", 0):.2f}, {edge.get("count", 0)} times'
        cls = "edge loop" if edge.get("loop") else "edge"
        if src is not None and src == dst:
            x, y = a
            d = (f"M{_f(x - 18)},{_f(y - _NODE_H / 2)} C{_f(x - 30)},{_f(y - _NODE_H / 2 - 34)} "
                 f"{_f(x + 30)},{_f(y - _NODE_H / 2 - 34)} {_f(x + 18)},{_f(y - _NODE_H / 2)}")
            lx, ly = x, y - _NODE_H / 2 - 28
        elif edge.get("loop") or (src is not None and dst is not None and b[0] <= a[0]):
            sx, sy, tx, ty = a[0], a[1] + _NODE_H / 2, b[0], b[1] + _NODE_H / 2
            dip = max(sy, ty) + 26 + abs(sx - tx) * 0.08
            d = f"M{_f(sx)},{_f(sy)} C{_f(sx)},{_f(dip)} {_f(tx)},{_f(dip)} {_f(tx)},{_f(ty)}"
            lx, ly = (sx + tx) / 2, dip - 4
        else:
            sx = a[0] + (_NODE_W / 2 if src is not None else 6)
            tx = b[0] - (_NODE_W / 2 if dst is not None else 6)
            mid = (sx + tx) / 2
            if tx - sx > _COL_W:  # skips a column: bow above the nodes in between
                lift = min(a[1], b[1]) - _NODE_H / 2 - 14 - 6 * (tx - sx) / _COL_W
                d = f"M{_f(sx)},{_f(a[1])} C{_f(sx + 40)},{_f(lift)} {_f(tx - 40)},{_f(lift)} {_f(tx)},{_f(b[1])}"
                lx, ly = mid, lift + 8
            else:
                d = f"M{_f(sx)},{_f(a[1])} C{_f(mid)},{_f(a[1])} {_f(mid)},{_f(b[1])} {_f(tx)},{_f(b[1])}"
                lx, ly = mid, (a[1] + b[1]) / 2 - 4
        stroke = 1 + 3 * float(edge.get("p", 0))
        body.append(f'<path class="{cls}" d="{d}" stroke-width="{stroke:.1f}" marker-end="url(#{arrow})">'
                    f'<title>{esc(tip)}</title></path>'
                    f'<text class="edgelabel" x="{_f(lx)}" y="{_f(ly)}" text-anchor="middle">{esc(label)}</text>')
    body.append(f'<circle class="terminal" cx="{_f(entry[0])}" cy="{_f(entry[1])}" r="7"><title>start</title></circle>'
                f'<circle class="terminal end" cx="{_f(exit_[0])}" cy="{_f(exit_[1])}" r="7"><title>end</title></circle>')
    for node in nodes:
        x, y = pos[node["agent"]]
        fan = int(node.get("fanout_max", 1) or 1)
        name = str(node["agent"])
        short = name if len(name) <= 18 else name[:17] + "\u2026"
        tip = (f'{name}: {node.get("calls", 0)} calls in {node.get("sessions", 0)} sessions, '
               f'{node.get("visits_per_session", 0):.2f} visits per session, '
               f'fan-out mean {node.get("fanout_mean", 1):.2f} max {fan}')
        rect = (f'<rect class="node" x="{_f(x - _NODE_W / 2)}" y="{_f(y - _NODE_H / 2)}" '
                f'width="{_NODE_W}" height="{_NODE_H}" rx="6"/>')
        shadow = ""
        if fan > 1:
            shadow = (f'<rect class="node fan" x="{_f(x - _NODE_W / 2 + 5)}" y="{_f(y - _NODE_H / 2 - 5)}" '
                      f'width="{_NODE_W}" height="{_NODE_H}" rx="6"/>')
        badge = (f'<text class="badge" x="{_f(x + _NODE_W / 2 - 4)}" y="{_f(y - _NODE_H / 2 + 11)}" '
                 f'text-anchor="end">x{fan}</text>') if fan > 1 else ""
        body.append(f'<g class="agent-node" data-agent="{esc(name)}"><title>{esc(tip)}</title>{shadow}{rect}'
                    f'<text class="nodelabel" x="{_f(x)}" y="{_f(y + 1)}" text-anchor="middle">{esc(short)}</text>'
                    f'<text class="nodesub" x="{_f(x)}" y="{_f(y + 14)}" text-anchor="middle">'
                    f'{node.get("calls", 0)} calls</text>{badge}</g>')
    hidden = len(graph.get("nodes", [])) - len(nodes)
    if hidden > 0:
        body.append(f'<text class="nodesub" x="8" y="{height - 8}">{hidden} rarer agents not drawn</text>')
    return _svg(width, height, "workflow graph", "".join(body), cls="chart graph")


# --- a session timeline ----------------------------------------------------------------

_LANE_H = 18


def timeline_chart(timeline: Mapping[str, Any], width: int = 860) -> str:
    """Each call as a bar on its agent's lane: queue, waiting for the first token, decoding.

    Tool gaps (no call in flight) are shaded across all lanes; the critical path's
    calls are outlined.
    """
    calls = list(timeline.get("calls", []))
    lanes: list[tuple[str, int]] = []
    for bar in calls:
        key = (bar["agent"], int(bar["lane"]))
        if key not in lanes:
            lanes.append(key)
    row = {key: i for i, key in enumerate(lanes)}
    left, top = 150, 8
    height = top + _LANE_H * max(len(lanes), 1) + 34
    end_ms = max([float(timeline.get("jct_ms", 0))] + [b["end_ms"] for b in calls] + [1.0])
    scale = (width - left - 12) / end_ms
    body: list[str] = []
    plot_h = _LANE_H * len(lanes)
    for gap in timeline.get("gaps", []):
        x = left + gap["start_ms"] * scale
        w = max((gap["end_ms"] - gap["start_ms"]) * scale, 1)
        body.append(f'<rect class="gap" x="{_f(x)}" y="{top}" width="{_f(w)}" height="{plot_h}">'
                    f'<title>tool / think gap {(gap["end_ms"] - gap["start_ms"]) / 1000:.2f} s</title></rect>')
    for (agent, lane), i in row.items():
        y = top + i * _LANE_H
        name = agent if len(agent) <= 20 else agent[:19] + "\u2026"
        suffix = f" #{lane + 1}" if lane else ""
        body.append(f'<text class="lanelabel" x="{left - 6}" y="{_f(y + 13)}" text-anchor="end">'
                    f'{esc(name + suffix)}</text>')
    for bar in calls:
        y = top + row[(bar["agent"], int(bar["lane"]))] * _LANE_H + 3
        x = left + bar["start_ms"] * scale
        total = max(bar["end_ms"] - bar["start_ms"], 0.0)
        queue = min(float(bar.get("queue_ms") or 0.0), total)
        ttft = min(max(float(bar.get("ttft_ms") or 0.0) - queue, 0.0), total - queue)
        tip = (f'{bar["agent"]}: {total / 1000:.2f} s (queue {queue:.0f} ms, TTFT '
               f'{bar.get("ttft_ms") or 0:.0f} ms), prompt {bar.get("prompt_tokens")} '
               f'(cached {bar.get("cached_tokens")}), output {bar.get("output_tokens")}, '
               f'replica {bar.get("replica")}, {bar.get("status")}'
               + (", on the critical path" if bar.get("critical") else ""))
        cls = "callbar critical" if bar.get("critical") else "callbar"
        segs = [("queue", queue), ("prefill", ttft), ("decode", total - queue - ttft)]
        inner, offset = [], x
        for name, ms in segs:
            if ms > 0:
                inner.append(f'<rect class="seg {name}" x="{_f(offset)}" y="{_f(y)}" '
                             f'width="{_f(max(ms * scale, 0.5))}" height="{_LANE_H - 6}"/>')
                offset += ms * scale
        inner.append(f'<rect class="outline" x="{_f(x)}" y="{_f(y)}" width="{_f(max(total * scale, 1))}" '
                     f'height="{_LANE_H - 6}"/>')
        body.append(f'<g class="{cls}"><title>{esc(tip)}</title>{"".join(inner)}</g>')
    axis_y = top + plot_h + 4
    for t in nice_ticks(0, end_ms / 1000, 8):
        x = left + t * 1000 * scale
        body.append(f'<line class="grid" x1="{_f(x)}" x2="{_f(x)}" y1="{top}" y2="{axis_y}"/>'
                    f'<text class="axis" x="{_f(x)}" y="{axis_y + 12}" text-anchor="middle">{t:g}s</text>')
    return _svg(width, height, f'timeline of session {timeline.get("session")}', "".join(body),
                cls="chart timeline")
