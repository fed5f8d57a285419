"""Cross-check (issue 4, 7a): the live path and the offline replay agree on one small workload.

Live: two simulated SGLang servers (``pythia-server sim``: H1's engine on the wall clock,
each in its own process) behind the Pythia gateway on loopback; a real
``openai.AsyncOpenAI`` client replays the workload, sending the Pythia tags as headers,
waiting for each call's dependencies and its delay (divided by the speedup), with the prompt as token ids (Dynamo's synthesis) and
``ignore_eos`` so each call produces its recorded output length. Offline: the same
workload, the same engine configuration and the same policy through ``ReplayRunner``.
Mean JCT and prefix-cache hit rate must agree within 15%. The engines run 4x faster than
the wall clock, so every wall millisecond the client, gateway or machine adds counts four
engine milliseconds: the client keeps its own CPU off the critical path (see the prompt).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
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
from tests.pythia_server.gateway.servers import ServerThread
from tests.pythia_server.replay.test_runner import _workload

#: engine time runs 4x the wall clock; measured live - offline mean JCT: +1.3-2.1% idle machine,
#: +5% with two extra CPU burners on the 2 cores (docs/benchmarks.md)
SPEEDUP = 4.0
MODEL = "sim-model"
ENGINE = EngineConfig()  # the simulated server's default: 400k KV tokens, fcfs, lru
#: (gateway router, offline bundle): the same policy object class on both paths
POLICIES = [("round_robin", "sglang"), ("cache_aware", "sglang-router")]


@dataclass
class SimProcess:
    """A ``pythia-server sim`` in its own process: its engine loop shares no GIL with the test."""

    process: subprocess.Popen[bytes]
    url: str


def _free_port() -> int:
    """A port free right now (bound and released; a rare race is retried by the caller)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_sim(seed: int) -> SimProcess:
    """Start one ``pythia-server sim`` and wait for /health; a port lost to a race is retried."""
    for _attempt in range(5):
        port = _free_port()
        argv = [sys.executable, "-m", "pythia_server.cli", "sim", "--port", str(port), "--model", MODEL,
                "--speedup", str(SPEEDUP), "--seed", str(seed), "--kv-tokens", str(ENGINE.max_total_num_tokens)]
        sim = SimProcess(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE),
                         f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        while sim.process.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"{sim.url}/health", timeout=1).status_code == 200:
                    return sim
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        if sim.process.poll() is None:
            sim.process.terminate()
            sim.process.wait(timeout=20)
        error = sim.process.stderr.read() if sim.process.stderr else b""
        if b"address already in use" not in error:
            raise RuntimeError(f"simulated server did not start: {error[-500:]!r}")
    raise RuntimeError("no free port for the simulated server")


@pytest.fixture(scope="module")
def sims() -> Iterator[list[SimProcess]]:
    started: list[SimProcess] = []
    try:
        for seed in range(2):
            started.append(_start_sim(seed))
        yield started
    finally:
        for sim in started:
            sim.process.terminate()
        for sim in started:
            sim.process.wait(timeout=20)


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
            # The token ids ride in extra_body: openai's typed-parameter transform walks a
            # list prompt element by element (~40 ms of client CPU for 4k ids), which the
            # sped-up clock would multiply; extra_body replaces the body's "prompt" as is.
            response = await client.completions.create(
                model=MODEL, prompt="", max_tokens=r.output_length,
                extra_body={"prompt": _prompt_ids(r), "ignore_eos": True}, extra_headers=encode_headers(tags))
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
def test_live_and_offline_agree(router: str, policy: str, sims: list[SimProcess], tmp_path: Path) -> None:
    requests = _agent_workload()
    config = GatewayConfig(db_path=str(tmp_path / "pythia.db"), health_interval_s=0.2, router=router)
    gateway = ServerThread(build_app(config, [(f"sim-{i}", t.url) for i, t in enumerate(sims)])).start()
    try:
        for t in sims:  # each run starts from empty caches, as the offline replicas do
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
    print(f"{router}/{policy}: live JCT {live_mean:.2f} s, offline {offline_jct:.2f} s; "
          f"hit rate live {live_hit:.3f}, offline {offline_hit:.3f}")
