"""Replaying a workload live: ``pythia-server serve`` with simulated replicas and a real client.

The offline replay (``replay/runner.py``) drives a policy on a virtual clock; this module
drives the same workload through the real path, so the two can be compared:

- :class:`ServeProcess` runs ``pythia-server serve --backend sim`` (the gateway plus its
  spawned ``pythia-server sim`` replicas, each in its own process) on a free port, and
  reaches its JSON API: the replicas' URLs, ``/flush_cache`` on each, the profiler's mode
  per workflow type;
- :func:`replay_live` replays requests with ``openai.AsyncOpenAI``: each call waits for its
  ``wait_for`` calls and its delay (or its start time), divided by the engines' speedup,
  sends the Pythia tags as headers, the prompt as token ids (Dynamo's synthesis, as
  offline) and ``ignore_eos`` so it produces its recorded output length. When a session's
  last call ends, its root ``invoke_workflow`` span goes to ``/v1/traces``, as the SDK sends
  it: the gateway then ends the session (profiler learning, cache hints, ``/close_session``)
  where the offline runner calls ``on_session_end``.

JCTs are converted back to engine seconds (wall seconds x speedup), comparable with offline.
:func:`run_policy_live` and :func:`run_policies_offline` are the two sides of one
comparison (``benchmarks/live_ranking.py``, ``tests/pythia_server/replay/test_live_ranking.py``),
Pythia trained on the same sessions on both.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Self

import httpx
import openai

from pythia_sdk import _semconv as sc
from pythia_sdk.protocol import AgentTags, encode_headers
from pythia_server.engine.step_time import StepTimeModel
from pythia_server.engine.types import EngineConfig
from pythia_server.policy import make_policy
from pythia_server.replay.bench import workflow_graphs
from pythia_server.replay.metrics import RunMetrics, ideal_jct_s, summarize
from pythia_server.replay.prompts import prompt_ids
from pythia_server.replay.runner import ReplayConfig, ReplayRunner
from pythia_server.replay.workload import WorkloadRequest, session_key

__all__ = ["LiveRun", "ServeProcess", "end_session_span", "offline_engine", "replay_live", "run_policies_offline",
           "run_policy_live", "served_model"]


@dataclass(frozen=True, slots=True)
class LiveRun:
    """One live replay, timed in engine seconds."""

    jct_s: dict[str, float]  # per session: last call's end minus first call's ready time
    prompt_tokens: int
    cached_tokens: int
    wall_s: float

    @property
    def hit_rate(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


def end_session_span(workflow: str, session: str, end_ns: int) -> bytes:
    """An OTLP/JSON body with the session's ended root span (the SDK's ``invoke_workflow``)."""

    def attr(key: str, value: str) -> dict[str, Any]:
        return {"key": key, "value": {"stringValue": value}}

    span_id = os.urandom(8).hex()
    span = {"traceId": os.urandom(16).hex(), "spanId": span_id, "name": f"invoke_workflow {workflow}",
            "kind": 1, "startTimeUnixNano": str(end_ns - 1), "endTimeUnixNano": str(end_ns),
            "attributes": [attr(sc.GEN_AI_OPERATION_NAME, "invoke_workflow"), attr(sc.PYTHIA_WORKFLOW, workflow),
                           attr(sc.PYTHIA_SESSION, session)]}
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()


async def _replay(url: str, requests: Sequence[WorkloadRequest], speedup: float, model: str,
                  end_sessions: bool, timeout_s: float) -> LiveRun:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=timeout_s)
    http = httpx.AsyncClient(timeout=30)
    done = {r.request_id: asyncio.Event() for r in requests}
    left = Counter(session_key(r) for r in requests)
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    usage = [0, 0]  # prompt, cached
    origin = time.perf_counter()

    async def one(r: WorkloadRequest) -> None:
        if r.wait_for:
            await asyncio.gather(*(done[d].wait() for d in r.wait_for))
            await asyncio.sleep(r.dependency_delay_ms / 1000.0 / speedup)
        else:
            await asyncio.sleep(max(origin + (r.timestamp_ms or 0.0) / 1000.0 / speedup - time.perf_counter(), 0))
        session = session_key(r)
        ready = time.perf_counter()
        starts[session] = min(starts.get(session, ready), ready)
        tags = AgentTags(r.workflow_type, r.session_id, r.agent, r.parent_agent)
        # Token ids ride in extra_body: openai's typed transform walks a list prompt element by
        # element (~40 ms of client CPU for 4k ids), which the sped-up clock would multiply.
        response = await client.completions.create(
            model=model, prompt="", max_tokens=r.output_length,
            extra_body={"prompt": prompt_ids(r), "ignore_eos": True}, extra_headers=encode_headers(tags))
        ends[session] = max(ends.get(session, 0.0), time.perf_counter())
        if response.usage is not None:
            usage[0] += response.usage.prompt_tokens
            details = response.usage.prompt_tokens_details
            usage[1] += (details.cached_tokens or 0) if details is not None else 0
        done[r.request_id].set()
        left[session] -= 1
        if end_sessions and left[session] == 0 and r.workflow_type and r.session_id:
            body = end_session_span(r.workflow_type, r.session_id, time.time_ns())
            reply = await http.post(f"{url}/v1/traces", content=body, headers={"content-type": "application/json"})
            reply.raise_for_status()

    try:
        await asyncio.gather(*(one(r) for r in requests))
    finally:
        await client.close()
        await http.aclose()
    jct = {s: (ends[s] - starts[s]) * speedup for s in starts}
    return LiveRun(jct, usage[0], usage[1], time.perf_counter() - origin)


def served_model(url: str) -> str:
    """The first model the gateway at ``url`` lists (it refuses names no replica serves)."""
    response = httpx.get(f"{url}/v1/models", timeout=30)
    response.raise_for_status()
    return str(response.json()["data"][0]["id"])


def replay_live(url: str, requests: Sequence[WorkloadRequest], *, speedup: float, model: str | None = None,
                end_sessions: bool = True, timeout_s: float = 600.0) -> LiveRun:
    """Replay ``requests`` through the gateway at ``url`` whose engines run ``speedup`` x real time.

    ``model`` None: the gateway's first listed model.
    """
    if speedup <= 0:
        raise ValueError("speedup must be positive")
    model = model or served_model(url)
    return asyncio.run(_replay(url, requests, speedup, model, end_sessions, timeout_s))


class ServeProcess:
    """``pythia-server serve --backend sim`` in a child process, stopped with SIGTERM."""

    def __init__(self, policy: str, *, replicas: int, speedup: float, db_path: str,
                 extra_args: Sequence[str] = (), ready_timeout_s: float = 120.0, attempts: int = 3) -> None:
        argv = [sys.executable, "-m", "pythia_server.cli", "serve", "--backend", "sim", "--port", "0",
                "--replicas", str(replicas), "--speedup", str(speedup), "--policy", policy,
                "--db", db_path, *extra_args]
        error = ""
        for _attempt in range(attempts):  # a port taken between its pick and its bind: start again
            # stderr to a file: a pipe nobody reads would block the gateway once full
            self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (open for the process's life)
            self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._stderr, text=True)
            url = self._wait_ready(ready_timeout_s)
            if url is not None:
                self.url = url
                return
            self._stderr.seek(0)
            error = self._stderr.read()
            self.stop()
        raise RuntimeError(f"pythia-server serve did not start: {error[-800:]}")

    def _wait_ready(self, timeout_s: float) -> str | None:
        """The URL from the line serve prints when ready; None if it exits or times out first."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                return None
            if "serving on " in line:
                return line.split("serving on ", 1)[1].split()[0]
        return None

    def _get(self, path: str) -> Any:
        response = httpx.get(f"{self.url}{path}", timeout=30)
        response.raise_for_status()
        return response.json()

    def replica_urls(self) -> list[str]:
        """The replicas serving now (one the autoscaler is draining or stopping is left out)."""
        body = self._get("/pythia/api/replicas")
        rows = body.get("replicas", body) if isinstance(body, dict) else body
        return [row["url"] for row in rows if not row.get("draining")]

    def flush_caches(self, attempts: int = 50) -> None:
        """Empty every replica's prefix cache (refused while requests run: retried)."""
        for url in self.replica_urls():
            for _ in range(attempts):
                if httpx.post(f"{url}/flush_cache", timeout=30).status_code == 200:
                    break
                time.sleep(0.1)
            else:
                raise RuntimeError(f"{url} refused /flush_cache")

    def modes(self) -> dict[str, str]:
        """The profiler's mode per workflow type (everything queued is learned first)."""
        return {w["workflow"]: w["mode"] for w in self._get("/pythia/api/workflows")["workflows"]}

    def describe_policy(self) -> dict[str, Any]:
        body = self._get("/pythia/api/replicas")
        return body.get("policy", {}) if isinstance(body, dict) else {}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def offline_engine(policy: str, block_size: int = 64, base: EngineConfig | None = None) -> EngineConfig:
    """The offline engine config matching what ``serve`` launches for ``policy``'s sims.

    Page size = the gateway's block size; the session radix cache when the bundle has cache
    hints (the runner sends no session ids, so offline it keeps nothing extra). The
    bundle's own ``EngineSettings`` are applied by the runner (``engine_config_for``).
    """
    bundle = make_policy(policy, block_size=block_size)
    return replace(base or EngineConfig(), page_size=block_size,
                   enable_session_radix_cache=bundle.cache_hints is not None)


def run_policies_offline(policies: Sequence[str], train: Sequence[WorkloadRequest], test: Sequence[WorkloadRequest],
                         *, replicas: int, seed: int = 0, block_size: int = 64) -> dict[str, RunMetrics]:
    """The offline counterpart of :func:`run_policy_live`, policy by policy on ``test``.

    Priority is asked once per call (``reprioritize_every_s`` None), as the live gateway
    can. Pythia bundles start from a copy of the profiler that replaying ``train`` under
    ``pythia`` trained (``benchmarks/pythia_ablation.py`` does the same).
    """
    step_time = StepTimeModel.load()
    profiler = None
    if any(p.startswith("pythia") for p in policies) and train:
        warmup = make_policy("pythia", seed=seed, block_size=block_size)
        config = ReplayConfig(replicas=replicas, engine=offline_engine("pythia", block_size), reprioritize_every_s=None)
        ReplayRunner(train, warmup, config, step_time).run()
        profiler = warmup.router.context.profiler  # type: ignore[attr-defined]
    graphs = workflow_graphs(test)
    out = {}
    for name in policies:
        own = copy.deepcopy(profiler) if name.startswith("pythia") and profiler is not None else None
        bundle = make_policy(name, seed=seed, block_size=block_size, graphs=graphs, profiler=own)
        engine = offline_engine(name, block_size)
        config = ReplayConfig(replicas=replicas, engine=engine, reprioritize_every_s=None)
        out[name] = summarize(ReplayRunner(test, bundle, config, step_time).run(), ideal_jct_s(test, step_time, engine))
    return out


def run_policy_live(policy: str, train: Sequence[WorkloadRequest], test: Sequence[WorkloadRequest], *,
                    replicas: int, speedup: float, workdir: Path,
                    serve_args: Sequence[str] = ()) -> tuple[LiveRun, dict[str, str]]:
    """``test`` through a fresh ``serve --policy policy``; returns the run and the profiler's modes.

    A Pythia bundle is trained as a deployed gateway is: ``train`` goes through the same
    gateway first (its profiler learns from the calls and the root spans), then every
    replica's cache is flushed so ``test`` starts from empty caches, as offline.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    with ServeProcess(policy, replicas=replicas, speedup=speedup, db_path=str(workdir / f"{policy}.db"),
                      extra_args=["--log-dir", str(workdir / f"logs-{policy}"), *serve_args]) as serve:
        modes: dict[str, str] = {}
        if policy.startswith("pythia") and train:
            replay_live(serve.url, train, speedup=speedup)
            modes = serve.modes()
            serve.flush_caches()
        return replay_live(serve.url, test, speedup=speedup), modes
