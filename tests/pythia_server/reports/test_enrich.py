"""enrich.py: every added number is checked against the call rows it came from."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from pythia_server.profiler.profiler import WorkflowProfiler
from pythia_server.profiler.types import CallObservation
from pythia_server.reports.data import build_report
from pythia_server.reports.enrich import (
    agent_extras,
    build_full_report,
    critical_path,
    enrich_report,
    jct_samples,
    percentile,
    session_timeline,
    timelines,
)
from pythia_server.reports.profiler_view import AccuracyHistory
from pythia_server.store.records import CallRecord, SessionRecord
from tests.pythia_server.reports import report_samples as rs


def _call(call_id: str, agent: str, start: float, end: float, session: str = "s1",
          output: int = 100, queue_ms: float | None = 5.0, ttft_ms: float | None = 50.0) -> CallRecord:
    return CallRecord(call_id=call_id, workflow="wf", session=session, agent=agent, parent=None,
                      call_tag=None, model="m", replica="r0", route="chat", stream=False,
                      prompt_tokens=1000, cached_tokens=400, output_tokens=output, queue_ms=queue_ms,
                      ttft_ms=ttft_ms, e2e_ms=(end - start) * 1000, finish_reason="stop", status="ok",
                      error=None, started_at=start, finished_at=end, block_size=64)


# planner 0-1; two researchers in parallel 1.5-3 and 1.5-4; writer 4.5-6
FAN = [_call("p", "planner", 100.0, 101.0), _call("ra", "researcher", 101.5, 103.0),
       _call("rb", "researcher", 101.5, 104.0), _call("w", "writer", 104.5, 106.0)]


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10.0], 95) == 10.0
    assert percentile([], 95) is None


def test_critical_path_follows_the_call_each_step_waited_for() -> None:
    assert [c.call_id for c in critical_path(FAN)] == ["p", "rb", "w"]


def test_timeline_lanes_gaps_and_critical_path_in_ms_from_session_start() -> None:
    tl = session_timeline(FAN, "x")
    bars = {b["call_id"]: b for b in tl["calls"]}
    assert tl["jct_ms"] == pytest.approx(6000.0)
    assert (bars["ra"]["lane"], bars["rb"]["lane"]) == (0, 1)  # parallel calls get their own rows
    assert bars["w"]["start_ms"] == pytest.approx(4500.0)
    assert [b["critical"] for b in tl["calls"]] == [True, False, True, True]
    assert [(g["start_ms"], g["end_ms"]) for g in tl["gaps"]] == [
        pytest.approx((1000.0, 1500.0)), pytest.approx((4000.0, 4500.0))]
    assert tl["critical_path_ms"] == pytest.approx(1000 + 2500 + 1500)
    assert tl["critical_path_calls"] == 3


def test_jct_samples_match_first_start_and_last_end_of_each_session() -> None:
    calls = rs.deep_research_calls(sessions=6)
    spans: dict[str, list[float]] = defaultdict(list)
    for c in calls:
        spans[c.session].extend([c.started_at, c.finished_at])  # type: ignore[index]
    samples = jct_samples(calls)
    assert [s["session"] for s in samples] == sorted(spans)  # oldest first
    for s in samples:
        assert s["jct_s"] == pytest.approx(max(spans[s["session"]]) - min(spans[s["session"]]))
        assert s["calls"] == sum(c.session == s["session"] for c in calls)
    assert len(jct_samples(calls, limit=2)) == 2


def test_jct_samples_prefer_the_store_session_records() -> None:
    rec = SessionRecord("wf", "s1", 100.0, 106.0, 107.0, 42.0, 4)
    assert jct_samples(FAN, [rec]) == [{"session": "s1", "start_s": 100.0, "jct_s": 42.0, "calls": 4}]


def test_timelines_pick_median_slowest_fastest_latest_once_each() -> None:
    calls = rs.deep_research_calls(sessions=7)
    jct = jct_samples(calls)
    picked = timelines(calls, jct)
    by_jct = sorted(jct, key=lambda s: s["jct_s"])
    labels = {t["label"]: t["session"] for t in picked}
    assert labels["median JCT"] == by_jct[3]["session"]
    assert labels["slowest"] == by_jct[-1]["session"]
    assert labels["fastest"] == by_jct[0]["session"]
    assert len({t["session"] for t in picked}) == len(picked)


def test_agent_extras_bound_coverage_counts_calls_at_or_under_the_bound() -> None:
    calls = [_call(str(i), "writer", i, i + 1, output=o, queue_ms=q)
             for i, (o, q) in enumerate([(100, 1.0), (200, 3.0), (300, None), (400, 8.0)])]
    extras = agent_extras(calls, {"writer": {"output_tokens_bound": 300}})["writer"]
    assert extras["bound_coverage"] == pytest.approx(0.75)
    assert extras["output_tokens_max"] == 400
    assert extras["output_bound"] == 300
    assert extras["queue_ms_mean"] == pytest.approx(4.0)
    assert agent_extras(calls)["writer"]["bound_coverage"] is None  # no bound, no coverage


def test_enrich_report_adds_every_section_and_keeps_the_builder_numbers() -> None:
    calls = rs.sample_calls()
    base = build_report(calls)
    full = enrich_report(base, calls, cache_actions=rs.CACHE_ACTIONS, autoscaler=rs.AUTOSCALER)
    assert base["workflows"][0].get("graph") is None  # the input is not modified
    for wf_base, wf in zip(base["workflows"], full["workflows"]):
        for key in ("graph", "profiler", "jct", "timelines", "cache_actions"):
            assert key in wf
        for a_base, a in zip(wf_base["agents"], wf["agents"]):
            assert {k: a[k] for k in a_base} == a_base  # builder's keys untouched
            assert "output_tokens_max" in a and "bound_coverage" in a
        assert len(wf["jct"]) == wf["sessions"]
    research = next(w for w in full["workflows"] if w["workflow"] == "deep_research")
    rows = [c for c in calls if c.workflow == "deep_research"]
    nodes = {n["agent"]: n for n in research["graph"]["nodes"]}
    assert {a: n["calls"] for a, n in nodes.items()} == dict(Counter(c.agent for c in rows))
    assert research["cache_actions"]["warms_sent"] == 40
    hostile = next(w for w in full["workflows"] if w["workflow"] == rs.HOSTILE)
    assert hostile["cache_actions"] is None  # "no cache actions yet"
    assert full["autoscaler"]["decisions"][0]["to_replicas"] == 3
    assert enrich_report(base, calls)["autoscaler"] is None  # "autoscaler off"


def _profiled(calls: list[CallRecord]) -> tuple[WorkflowProfiler, AccuracyHistory]:
    profiler, history = WorkflowProfiler(), AccuracyHistory(min_interval_s=0)
    ends: dict[tuple[str, str], float] = {}
    for c in sorted(calls, key=lambda c: c.finished_at):
        profiler.observe(CallObservation(c.workflow, c.session, c.agent, c.started_at, c.finished_at,
                                         c.prompt_tokens or 0, c.output_tokens or 0,
                                         c.cached_tokens or 0, c.parent, c.call_id))
        ends[(c.workflow, c.session)] = c.finished_at  # type: ignore[index]
    for (wf, session), end in sorted(ends.items(), key=lambda kv: kv[1]):
        profiler.end_session(wf, session, end + 1.0)
        history.record(profiler.snapshot(), end + 1.0)
    return profiler, history


def test_full_report_draws_the_profilers_graph_with_counts_from_the_rows() -> None:
    calls = rs.deep_research_calls(sessions=12)
    profiler, history = _profiled(calls)
    full = build_full_report(calls, profiler=profiler, history=history, now_s=rs.T0 + 999)
    wf = full["workflows"][0]
    assert wf["graph"]["source"] == "profiler"
    assert wf["profiler"]["mode"] in ("shadow", "proactive")
    assert wf["profiler"]["sessions_seen"] == 12
    assert len(wf["profiler"]["accuracy"]) >= 2
    nodes = {n["agent"]: n for n in wf["graph"]["nodes"]}
    assert nodes["researcher"]["calls"] == sum(c.agent == "researcher" for c in calls)
    assert nodes["researcher"]["fanout_max"] >= 2
    assert full["generated_at_s"] == rs.T0 + 999
    writer = next(a for a in wf["agents"] if a["agent"] == "writer")
    bound = writer["output_bound"]
    if bound is not None:
        outputs = [c.output_tokens for c in calls if c.agent == "writer"]
        assert writer["bound_coverage"] == pytest.approx(sum(o <= bound for o in outputs) / len(outputs))


def test_cache_action_summary_counts_warms_hits_and_waste_per_workflow() -> None:
    from pythia_server.reports.enrich import cache_action_summary

    log = [{"at_s": 3.0, "workflow": "a", "action": "warm", "tokens": 100, "outcome": "hit"},
           {"at_s": 1.0, "workflow": "a", "action": "warm", "tokens": 50, "outcome": "wasted"},
           {"at_s": 2.0, "workflow": "a", "action": "warm", "tokens": 70, "outcome": None},
           {"at_s": 4.0, "workflow": None, "action": "release", "tokens": 10}]
    summary = cache_action_summary(log, recent=2)
    a = summary["a"]
    assert (a["warms_sent"], a["warm_hits"], a["warms_wasted"]) == (3, 1, 1)
    assert (a["warm_tokens"], a["hit_tokens"]) == (220, 100)
    assert [r["at_s"] for r in a["recent"]] == [2.0, 3.0]  # the latest, oldest first
    assert summary["(untagged)"]["warms_sent"] == 0
