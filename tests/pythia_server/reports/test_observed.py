"""observed.py: steps, fan-out, loops and the path summary from call records."""

from __future__ import annotations

import pytest

from pythia_server.reports.observed import Step, observed_graph, session_steps, summarise_paths
from tests.pythia_server.reports import report_samples as rs
from tests.pythia_server.reports.test_enrich import FAN, _call


def test_overlapping_calls_of_one_agent_are_one_fanout_step() -> None:
    assert session_steps(FAN) == [Step("planner", 1), Step("researcher", 2), Step("writer", 1)]


def test_sequential_calls_of_one_agent_are_a_self_loop() -> None:
    calls = [_call(str(i), "main", i * 2.0, i * 2.0 + 1) for i in range(3)]
    graph = observed_graph(calls)
    loop = next(e for e in graph["edges"] if e["src"] == "main" and e["dst"] == "main")
    assert loop["loop"] and loop["count"] == 2
    assert graph["regex"] == "main{3}"


def test_graph_edges_are_transition_probabilities_with_loops_marked() -> None:
    calls = rs.deep_research_calls(sessions=20)
    graph = observed_graph(calls)
    assert graph["sessions"] == 20
    out: dict[str | None, float] = {}
    for e in graph["edges"]:
        out[e["src"]] = out.get(e["src"], 0.0) + e["p"]
    assert all(total == pytest.approx(1.0) for total in out.values())
    loops = {(e["src"], e["dst"]) for e in graph["edges"] if e["loop"]}
    assert loops == {("reviewer", "writer")}
    layer = {n["agent"]: n["layer"] for n in graph["nodes"]}
    assert layer["planner"] < layer["researcher"] < layer["writer"] < layer["reviewer"]
    research = next(n for n in graph["nodes"] if n["agent"] == "researcher")
    assert 2 <= research["fanout_mean"] <= 4 and research["fanout_max"] <= 4
    assert graph["regex"].startswith("planner researcher[x")


def test_summary_widens_repeat_counts_to_the_range_seen() -> None:
    a = [Step("w", 1), Step("r", 1)]
    paths = [[Step("p", 1)] + a, [Step("p", 1)] + a * 3, [Step("x", 1)]]
    assert summarise_paths(paths) == "p (w r){1,3}   (67% of sessions)"
    assert summarise_paths([]) is None


def test_summary_of_the_sample_workflow_names_fanout_width_and_review_rounds() -> None:
    graph = observed_graph(rs.deep_research_calls(sessions=30))
    assert graph["regex"] == "planner researcher[x2-4] (writer reviewer){1,3}"
