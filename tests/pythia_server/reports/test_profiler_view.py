"""profiler_view.py: the learned automaton as the report's graph; accuracy over time."""

from __future__ import annotations

from pythia_server.profiler.types import END, START, ModeState, OutputBound, ProfilerSnapshot, WorkflowSnapshot
from pythia_server.reports.profiler_view import AccuracyHistory, profiler_graph, profiler_views


def _snapshot(top1: float, mode: str = "shadow") -> ProfilerSnapshot:
    wf = WorkflowSnapshot(
        workflow="wf", sessions_learned=10, calls_learned=50,
        mode=ModeState(mode, 10, top1, 0.9, reason="judged on 10"), context_model="last-1",
        model_scores={}, regex="a b+ c",
        edges=((START, "a", 1.0), ("a", "b", 1.0), ("b", "b", 0.4), ("b", "c", 0.6), ("c", END, 1.0)),
        agents={"b": OutputBound(30, 100.0, 90.0, 180, 0.9, 0.9)}, delays_s={}, prefixes={},
        fanout={"b": 2.6})
    return ProfilerSnapshot(live_sessions=0, dropped_observations=0, workflows=(wf,))


def test_graph_maps_start_and_end_to_none_and_marks_the_self_loop() -> None:
    graph = profiler_graph(_snapshot(0.8).workflows[0])
    edges = {(e["src"], e["dst"]): e for e in graph["edges"]}
    assert set(edges) == {(None, "a"), ("a", "b"), ("b", "b"), ("b", "c"), ("c", None)}
    assert edges[("b", "b")]["loop"] and not edges[("a", "b")]["loop"]
    nodes = {n["agent"]: n for n in graph["nodes"]}
    assert [nodes[a]["layer"] for a in "abc"] == [0, 1, 2]
    assert nodes["b"]["fanout_max"] == 3 and nodes["b"]["fanout_mean"] == 2.6


def test_views_carry_mode_bounds_and_history() -> None:
    history = AccuracyHistory(min_interval_s=60, max_points=3)
    history.record(_snapshot(0.5), 0.0)
    history.record(_snapshot(0.5), 10.0)  # unchanged and too soon: not kept
    history.record(_snapshot(0.8, "proactive"), 20.0)
    view = profiler_views(_snapshot(0.8, "proactive"), history)["wf"]
    assert [p["at_s"] for p in view["accuracy"]] == [0.0, 20.0]
    assert view["mode"] == "proactive" and view["bounds"]["b"]["output_tokens_bound"] == 180
    for t in (100.0, 200.0, 300.0):
        history.record(_snapshot(0.8, "proactive"), t)
    assert len(history.points("wf")) == 3  # bounded
