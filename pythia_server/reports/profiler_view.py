"""What the report shows of the profiler: its learned graph, bounds, mode, accuracy history.

:func:`profiler_views` turns a :class:`~pythia_server.profiler.types.ProfilerSnapshot`
into the per-workflow ``profiler`` view of docs/reports.md (the ``graph`` in the same
shape as the observed one, so one drawing serves both). The snapshot holds only the
current accuracy; :class:`AccuracyHistory` keeps a bounded series of it so the report
can draw accuracy over time. Pure: the driver passes ``now_s``.
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from collections.abc import Mapping
from typing import Any

from pythia_server.profiler.types import END, START, ProfilerSnapshot, WorkflowSnapshot
from pythia_server.reports.observed import layers, loop_edges

__all__ = ["AccuracyHistory", "profiler_graph", "profiler_views"]


class AccuracyHistory:
    """Per workflow type, the latest ``max_points`` (time, accuracy, mode) samples.

    :meth:`record` keeps a point only when something changed or ``min_interval_s``
    passed, so calling it on every report request costs nothing in memory.
    """

    def __init__(self, max_points: int = 500, min_interval_s: float = 30.0,
                 max_workflows: int = 256) -> None:
        self.max_points = max_points
        self.min_interval_s = min_interval_s
        self.max_workflows = max_workflows
        self._points: dict[str, deque[dict[str, Any]]] = {}

    def record(self, snapshot: ProfilerSnapshot, now_s: float) -> None:
        for wf in snapshot.workflows:
            points = self._points.get(wf.workflow)
            if points is None:
                if len(self._points) >= self.max_workflows:
                    continue
                points = self._points[wf.workflow] = deque(maxlen=self.max_points)
            point = {"at_s": now_s, "next_agent_top1": wf.mode.next_agent_top1,
                     "bound_coverage": wf.mode.bound_coverage, "mode": wf.mode.mode,
                     "sessions": wf.sessions_learned}
            if points:
                last = points[-1]
                same = all(last[k] == point[k] for k in ("next_agent_top1", "bound_coverage", "mode"))
                if same and now_s - last["at_s"] < self.min_interval_s:
                    continue
            points.append(point)

    def points(self, workflow: str) -> list[dict[str, Any]]:
        return list(self._points.get(workflow, ()))


def profiler_graph(wf: WorkflowSnapshot) -> dict[str, Any]:
    """The learned automaton's pruned edges as the report's ``graph`` (source "profiler")."""
    edges: dict[str, Counter[str]] = defaultdict(Counter)
    entry: Counter[str] = Counter()
    probs: list[tuple[str | None, str | None, float]] = []
    for src, dst, p in wf.edges:
        a = None if src == START else src
        b = None if dst == END else dst
        if a is None and b is None:
            continue
        probs.append((a, b, p))
        if a is None:
            entry[b] += 1  # type: ignore[index]
        elif b is not None:
            edges[a][b] += 1
    nodes = sorted({n for a, b, _ in probs for n in (a, b) if n is not None})
    loops = loop_edges(entry, edges)
    forward = {s: Counter({d: n for d, n in ds.items() if (s, d) not in loops and d != s})
               for s, ds in edges.items()}
    layer = layers(nodes, forward)
    return {
        "source": "profiler",
        "sessions": wf.sessions_learned,
        "regex": wf.regex,
        "nodes": [{"agent": n, "layer": layer[n],
                   "calls": wf.agents[n].samples if n in wf.agents else 0,
                   "fanout_mean": wf.fanout.get(n, 1.0),
                   "fanout_max": max(1, round(wf.fanout.get(n, 1.0)))} for n in nodes],
        "edges": [{"src": a, "dst": b, "p": p, "count": None,
                   "loop": a is not None and ((a, b) in loops or a == b)} for a, b, p in probs],
    }


def profiler_views(snapshot: ProfilerSnapshot,
                   history: AccuracyHistory | None = None) -> dict[str, dict[str, Any]]:
    """Per workflow type, the ``profiler`` view that :func:`enrich_report` takes."""
    views: dict[str, dict[str, Any]] = {}
    for wf in snapshot.workflows:
        views[wf.workflow] = {
            "mode": wf.mode.mode,
            "mode_reason": wf.mode.reason,
            "sessions_seen": wf.sessions_learned,
            "regex": wf.regex,
            "next_agent_top1": wf.mode.next_agent_top1,
            "bound_coverage": wf.mode.bound_coverage,
            "accuracy": history.points(wf.workflow) if history is not None else [],
            "graph": profiler_graph(wf),
            "bounds": {agent: _bound(b) for agent, b in wf.agents.items()},
        }
    return views


def _bound(bound: Any) -> Mapping[str, Any]:
    return {"output_tokens_bound": bound.bound_tokens, "quantile": bound.quantile,
            "confidence": bound.confidence, "samples": bound.samples,
            "mean_tokens": bound.mean_tokens}
