"""The example workflow (examples/research_team.py, LangGraph) through the gateway: its report
agrees with its call records, every number recomputed here from the store's rows."""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pythia_server.reports.command import fetch_report, load_report
from pythia_server.sglang_backend.sim_server import SimServerConfig
from pythia_server.sglang_backend.sim_server import build_app as build_sim_app
from pythia_server.store.records import CallRecord
from pythia_server.store.sqlite import StoreReader
from tests.pythia_server.gateway.conftest import SIM_MODEL, RunningGateway, start_gateway
from tests.pythia_server.gateway.servers import ServerThread

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "examples"))

import research_team  # noqa: E402

SESSIONS = 6


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[RunningGateway]:
    sims = [ServerThread(build_sim_app(SimServerConfig(model=SIM_MODEL, speedup=200.0, seed=i))).start()
            for i in range(2)]
    running = start_gateway(tmp_path, [(f"sim-{i}", t.url) for i, t in enumerate(sims)])
    yield running
    running.server.stop()
    for t in sims:
        t.stop()


def approx(value: float | None, digits: int) -> Any:
    return None if value is None else pytest.approx(value, abs=10 ** -digits)


def recomputed(calls: list[CallRecord]) -> dict[str, Any]:
    """The workflow row of the report, from the rows alone (definitions of docs/server.md)."""
    ok = [c for c in calls if c.status == "ok"]
    spans: dict[str, list[float]] = {}
    for c in calls:
        span = spans.setdefault(c.session or "", [c.started_at, c.finished_at])
        span[0], span[1] = min(span[0], c.started_at), max(span[1], c.finished_at)
    jct = [end - start for start, end in spans.values()]
    by_agent: dict[str, list[CallRecord]] = defaultdict(list)
    for c in ok:
        by_agent[c.agent or "(untagged)"].append(c)
    agents = {}
    for agent, rows in by_agent.items():
        agents[agent] = {
            "calls": len(rows),
            "output_tokens_mean": sum(c.output_tokens or 0 for c in rows) / len(rows),
            "prompt_tokens_mean": sum(c.prompt_tokens or 0 for c in rows) / len(rows),
            "cache_hit_rate": sum(c.cached_tokens or 0 for c in rows) / sum(c.prompt_tokens or 0 for c in rows),
            "ttft_ms_mean": sum(c.ttft_ms or 0.0 for c in rows) / len(rows),
            "e2e_ms_mean": sum(c.e2e_ms or 0.0 for c in rows) / len(rows),
            "outputs": [c.output_tokens or 0 for c in rows],
        }
    return {"sessions": len(spans), "calls": len(calls), "jct_mean_s": sum(jct) / len(jct),
            "prompt_tokens": sum(c.prompt_tokens or 0 for c in ok),
            "cached_tokens": sum(c.cached_tokens or 0 for c in ok),
            "output_tokens": sum(c.output_tokens or 0 for c in ok), "agents": agents}


@pytest.mark.asyncio(loop_scope="session")  # ChatOpenAI caches its async client per loop
async def test_research_team_report_agrees_with_its_call_records(gateway: RunningGateway) -> None:
    await research_team.run_sessions(gateway.url + "/v1", sessions=SESSIONS, concurrency=3)
    live = fetch_report(gateway.url)
    reader = StoreReader(str(gateway.db_path))
    try:
        calls, sessions = reader.calls(), reader.sessions()
    finally:
        reader.close()
    assert {c.workflow for c in calls} == {research_team.WORKFLOW}
    assert all(c.status == "ok" and c.ttft_ms is not None and not c.stream for c in calls)
    assert len(sessions) == SESSIONS and all(s.ended_at is not None for s in sessions)  # root spans ended them
    expected = recomputed(calls)
    for report in (live, load_report(str(gateway.db_path))):
        (wf,) = report["workflows"]
        assert (wf["sessions"], wf["sessions_ended"], wf["calls"]) == (SESSIONS, SESSIONS, expected["calls"])
        assert (wf["prompt_tokens"], wf["cached_tokens"], wf["output_tokens"]) == \
            (expected["prompt_tokens"], expected["cached_tokens"], expected["output_tokens"])
        assert wf["jct_mean_s"] == approx(expected["jct_mean_s"], 3)
        assert sorted(a["agent"] for a in wf["agents"]) == sorted(expected["agents"])
        for row in wf["agents"]:
            want = expected["agents"][row["agent"]]
            assert row["calls"] == want["calls"]
            assert row["output_tokens_mean"] == approx(want["output_tokens_mean"], 1)
            assert row["prompt_tokens_mean"] == approx(want["prompt_tokens_mean"], 1)
            assert row["cache_hit_rate"] == approx(want["cache_hit_rate"], 4)
            assert row["ttft_ms_mean"] == approx(want["ttft_ms_mean"], 2)
            assert row["e2e_ms_mean"] == approx(want["e2e_ms_mean"], 2)
            assert row["output_tokens_max"] == max(want["outputs"])
            if row["output_bound"] is not None:
                covered = sum(o <= row["output_bound"] for o in want["outputs"]) / len(want["outputs"])
                assert row["bound_coverage"] == pytest.approx(covered)
        # The profiler's view (live, or rebuilt from the file) learned every session's shape.
        assert wf["profiler"]["sessions_seen"] == SESSIONS and wf["profiler"]["mode"] == "shadow"
        assert wf["graph"]["source"] == "profiler"
        assert {n["agent"] for n in wf["graph"]["nodes"]} == {"planner", "researcher", "writer", "reviewer"}
        assert wf["profiler"]["regex"].startswith("planner researcher[x")
        assert sum(len(t["calls"]) for t in wf["timelines"]) <= expected["calls"]
        assert [s["session"] for s in wf["jct"]] == [s.session for s in sessions]
    assert live["workflows"][0]["profiler"]["regex"] == report["workflows"][0]["profiler"]["regex"]
