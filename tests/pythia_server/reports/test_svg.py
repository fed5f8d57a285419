"""svg.py: axes, escaping and the shapes the report relies on."""

from __future__ import annotations

from pythia_server.reports.svg import cdf_chart, esc, graph_chart, meter, nice_ticks, timeline_chart


def test_nice_ticks_are_round_and_cover_the_range() -> None:
    assert nice_ticks(0, 10, 5) == [0, 2, 4, 6, 8, 10]
    assert nice_ticks(0, 1, 4) == [0, 0.25, 0.5, 0.75, 1.0] or nice_ticks(0, 1, 4) == [0, 0.5, 1.0]
    assert nice_ticks(3, 3) == [3]


def test_esc_covers_quotes_and_tags() -> None:
    assert esc('<a href="x">\'') == "&lt;a href=&quot;x&quot;&gt;&#x27;"


def test_graph_draws_fanout_badge_and_loop_edge() -> None:
    graph = {"nodes": [{"agent": "w", "layer": 0, "calls": 4, "fanout_max": 1},
                       {"agent": "r<x>", "layer": 1, "calls": 6, "fanout_max": 3}],
             "edges": [{"src": None, "dst": "w", "p": 1.0, "count": 2, "loop": False},
                       {"src": "w", "dst": "r<x>", "p": 1.0, "count": 3, "loop": False},
                       {"src": "r<x>", "dst": "w", "p": 0.5, "count": 1, "loop": True},
                       {"src": "r<x>", "dst": None, "p": 0.5, "count": 2, "loop": False}]}
    svg = graph_chart(graph)
    assert ">x3<" in svg and 'class="edge loop"' in svg and "r&lt;x&gt;" in svg
    assert svg.count('class="agent-node"') == 2


def test_timeline_marks_the_critical_path_and_gaps() -> None:
    tl = {"session": "s", "jct_ms": 3000, "gaps": [{"start_ms": 1000, "end_ms": 2000}],
          "calls": [{"agent": "a", "lane": 0, "start_ms": 0, "end_ms": 1000, "queue_ms": 10,
                     "ttft_ms": 100, "critical": True},
                    {"agent": "b", "lane": 0, "start_ms": 2000, "end_ms": 3000, "queue_ms": None,
                     "ttft_ms": None, "critical": False}]}
    svg = timeline_chart(tl)
    assert svg.count('class="callbar critical"') == 1 and svg.count('class="gap"') == 1


def test_cdf_and_meter() -> None:
    assert "p95 2.00 s" in cdf_chart([1.0, 2.0, 3.0], {"p95": 2.0})
    assert meter(None) == "" and 'width="30"' in meter(0.5)


def test_time_axes_pick_a_readable_unit() -> None:
    from pythia_server.reports.svg import scatter_trend, time_unit

    assert time_unit(30) == (1.0, "s") and time_unit(600) == (60.0, "min") and time_unit(4 * 3600)[1] == "h"
    assert "session start (s)" in scatter_trend([(0.0, 1.0), (5.0, 2.0)])
