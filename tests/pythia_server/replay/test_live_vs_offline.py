"""Cross-check (issue 4, 7a): the live path and the offline replay agree on one small workload.

Live: two simulated SGLang servers (H1's engine on the wall clock, sped up) behind the
Pythia gateway on loopback; a real ``openai.AsyncOpenAI`` client replays the workload,
sending the Pythia tags as headers, waiting for each call's dependencies and its delay
(divided by the speedup), with the prompt as token ids (Dynamo's synthesis) and
``ignore_eos`` so each call produces its recorded output length. Offline: the same
workload, the same engine configuration and the same policy through ``ReplayRunner``.
Mean JCT and prefix-cache hit rate must agree within 15%.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import openai
import pytest

from pythia_sdk.protocol import AgentTags, encode_headers
from pythia_server.config import GatewayConfig
from pythia_server.engine.step_time import StepTimeModel
from pythia_server.engine.types import EngineConfig
from pythia_server.gateway.app import build_app
from pythia_server.policy import make_policy
from pythia_server.replay.prompts import prompt_ids as _prompt_ids
from pythia_server.replay.runner import ReplayConfig, ReplayRunner
from pythia_server.replay.workload import WorkloadRequest
from pythia_server.sglang_backend.sim_server import SimServerConfig
from pythia_server.sglang_backend.sim_server import build_app as build_sim_app
from tests.pythia_server.gateway.servers import ServerThread
from tests.pythia_server.replay.test_runner import _workload

SPEEDUP = 1.0  # the live engine adds ~1 ms of Python per step (it falls behind); faster clocks magnify it
MODEL = "sim-model"
ENGINE = EngineConfig()  # the simulated server's default: 400k KV tokens, fcfs, lru
#: (gateway router, offline bundle): the same policy object class on both paths
POLICIES = [("round_robin", "sglang"), ("cache_aware", "sglang-router")]


@pytest.fixture(scope="module")
def sims() -> Iterator[list[ServerThread]]:
    threads = [ServerThread(build_sim_app(SimServerConfig(model=MODEL, speedup=SPEEDUP, seed=i, engine=ENGINE))).start()
               for i in range(2)]
    yield threads
    for t in threads:
        t.stop()


def _live_replay(url: str, requests: list[WorkloadRequest]) -> tuple[dict[str, float], float]:
    """Replay on the live gateway; returns (JCT per session in engine seconds, hit rate)."""

    async def run() -> tuple[dict[str, float], float]:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=120)
        done = {r.request_id: asyncio.Event() for r in requests}
        starts: dict[str, float] = {}
        ends: dict[str, float] = {}
        usage = {"prompt": 0, "cached": 0}
        origin = time.perf_counter()

        async def one(r: WorkloadRequest) -> None:
            if r.wait_for:
                await asyncio.gather(*(done[d].wait() for d in r.wait_for))
                await asyncio.sleep(r.dependency_delay_ms / 1000.0 / SPEEDUP)
            else:
                await asyncio.sleep(max(origin + (r.timestamp_ms or 0.0) / 1000.0 / SPEEDUP - time.perf_counter(), 0))
            ready = time.perf_counter()
            session = r.session_id or r.request_id
            starts[session] = min(starts.get(session, ready), ready)
            tags = AgentTags(r.workflow_type, r.session_id, r.agent)
            response = await client.completions.create(
                model=MODEL, prompt=_prompt_ids(r), max_tokens=r.output_length,
                extra_body={"ignore_eos": True}, extra_headers=encode_headers(tags))
            assert response.usage is not None and response.usage.completion_tokens == r.output_length
            usage["prompt"] += response.usage.prompt_tokens
            details = response.usage.prompt_tokens_details
            usage["cached"] += (details.cached_tokens or 0) if details is not None else 0
            ends[session] = max(ends.get(session, 0.0), time.perf_counter())
            done[r.request_id].set()

        await asyncio.gather(*(one(r) for r in requests))
        await client.close()
        jct = {s: (ends[s] - starts[s]) * SPEEDUP for s in starts}
        return jct, usage["cached"] / usage["prompt"]

    return asyncio.run(run())


def _agent_workload() -> list[WorkloadRequest]:
    """Six planner -> 3 searchers -> writer runs with tool time between steps, as agents have."""
    tool_ms = {"searcher": 1500.0, "writer": 1000.0}
    return [replace(r, tool_wait_ms=tool_ms[r.agent]) if r.agent in tool_ms else r
            for r in _workload(sessions=6, gap_ms=1500.0)]


@pytest.mark.parametrize(("router", "policy"), POLICIES)
def test_live_and_offline_agree(router: str, policy: str, sims: list[ServerThread], tmp_path: Path) -> None:
    requests = _agent_workload()
    config = GatewayConfig(db_path=str(tmp_path / "pythia.db"), health_interval_s=0.2, router=router)
    gateway = ServerThread(build_app(config, [(f"sim-{i}", t.url) for i, t in enumerate(sims)])).start()
    try:
        for t in sims:  # each run starts from empty caches, as the offline replicas do
            import httpx

            assert httpx.post(f"{t.url}/flush_cache").status_code == 200
        live_jct, live_hit = _live_replay(gateway.url, requests)
    finally:
        gateway.stop()
    offline = ReplayRunner(requests, make_policy(policy), ReplayConfig(replicas=2, engine=ENGINE),
                           StepTimeModel.load()).run()
    offline_jct = sum(s.jct_s for s in offline.sessions) / len(offline.sessions)
    offline_hit = sum(r.cached_tokens for r in offline.requests) / sum(r.prompt_tokens for r in offline.requests)
    live_mean = sum(live_jct.values()) / len(live_jct)
    assert len(live_jct) == len(offline.sessions) == 6
    assert live_mean == pytest.approx(offline_jct, rel=0.15), (live_mean, offline_jct)
    assert live_hit == pytest.approx(offline_hit, rel=0.15), (live_hit, offline_hit)
