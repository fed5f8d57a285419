from __future__ import annotations

from dataclasses import replace

import pytest

from pythia_server.reports.data import build_report, percentile
from pythia_server.store.records import CallRecord, SessionRecord

BASE = CallRecord(
    call_id="", workflow="wf", session="s1", agent="planner", parent=None, call_tag=None, model="m",
    replica="r0", route="chat", stream=True, prompt_tokens=100, cached_tokens=0, output_tokens=10,
    queue_ms=1.0, ttft_ms=20.0, e2e_ms=100.0, finish_reason="stop", status="ok", error=None,
    started_at=0.0, finished_at=0.1, block_size=64)


def rec(call_id: str, **changes: object) -> CallRecord:
    return replace(BASE, call_id=call_id, **changes)


@pytest.mark.parametrize(("values", "q", "expected"), [
    ([], 0.95, None), ([5.0], 0.95, 5.0), ([1.0, 2.0], 0.5, 1.5),
    (list(map(float, range(1, 101))), 0.95, 95.05), ([3.0, 1.0, 2.0], 1.0, 3.0), ([3.0, 1.0, 2.0], 0.0, 1.0),
])
def test_percentile_interpolates_linearly(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == (pytest.approx(expected) if expected is not None else None)


def test_workflow_and_agent_rows() -> None:
    calls = [
        rec("1", session="s1", agent="planner", started_at=0.0, finished_at=1.0, prompt_tokens=100,
            cached_tokens=0, output_tokens=10, e2e_ms=1000.0),
        rec("2", session="s1", agent="writer", started_at=2.0, finished_at=4.0, prompt_tokens=300,
            cached_tokens=150, output_tokens=30, e2e_ms=2000.0, ttft_ms=None),
        rec("3", session="s2", agent="planner", started_at=10.0, finished_at=13.0, prompt_tokens=100,
            cached_tokens=100, output_tokens=20, e2e_ms=3000.0),
        rec("4", session="s2", agent="writer", status="aborted", prompt_tokens=500, cached_tokens=None,
            output_tokens=None, started_at=13.0, finished_at=14.0),
        rec("5", workflow=None, session=None, agent=None, prompt_tokens=7, cached_tokens=None, output_tokens=1),
        rec("6", workflow="other", session="x", agent=None, status="error", prompt_tokens=9, output_tokens=None),
    ]
    sessions = [SessionRecord("wf", "s1", 0.0, 4.0, 10.0, 4.0, 2), SessionRecord("wf", "s2", 10.0, 14.0, None, 4.0, 2)]
    report = build_report(calls, sessions)
    assert [w["workflow"] for w in report["workflows"]] == ["other", "wf", "(untagged)"]
    wf = report["workflows"][1]
    assert (wf["sessions"], wf["sessions_ended"], wf["calls"], wf["aborted"], wf["errors"]) == (2, 1, 4, 1, 0)
    assert wf["jct_mean_s"] == 4.0 and wf["jct_p95_s"] == 4.0  # s1: 0..4, s2: 10..14
    # Finished calls only: 500 aborted prompt tokens are not counted.
    assert (wf["prompt_tokens"], wf["cached_tokens"], wf["output_tokens"]) == (500, 250, 60)
    assert wf["cache_hit_rate"] == 0.5
    planner, writer = wf["agents"]
    assert (planner["agent"], planner["calls"], planner["prompt_tokens_mean"]) == ("planner", 2, 100.0)
    assert planner["output_tokens_mean"] == 15.0 and planner["output_tokens_p95"] == 19.5
    assert planner["cache_hit_rate"] == 0.5 and planner["e2e_ms_mean"] == 2000.0
    assert (writer["calls"], writer["aborted"], writer["cache_hit_rate"], writer["ttft_ms_mean"]) == (2, 1, 0.5, None)
    untagged = report["workflows"][2]
    assert (untagged["sessions"], untagged["calls"], untagged["cache_hit_rate"]) == (0, 1, None)
    assert untagged["agents"][0]["agent"] == "(untagged)"
    assert report["workflows"][0]["errors"] == 1 and report["workflows"][0]["prompt_tokens"] == 0


def test_required_keys_and_filter() -> None:
    report = build_report([rec("1"), rec("2", workflow="b")], workflow="b")
    (only,) = report["workflows"]
    assert only["workflow"] == "b"
    required = {"workflow", "sessions", "calls", "jct_mean_s", "jct_p95_s", "cache_hit_rate", "prompt_tokens",
                "output_tokens", "agents"}
    assert required <= set(only)
    assert {"agent", "calls", "prompt_tokens_mean", "prompt_tokens_p95", "output_tokens_mean", "output_tokens_p95",
            "cache_hit_rate", "ttft_ms_mean", "e2e_ms_mean", "e2e_ms_p95"} <= set(only["agents"][0])
    assert build_report([]) == {"workflows": []}
    assert build_report([rec("1")], workflow="missing") == {"workflows": []}
