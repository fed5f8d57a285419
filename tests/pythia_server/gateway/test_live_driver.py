"""The gateway drives a whole policy bundle live, over loopback, in front of simulated engines.

Two simulated SGLang replicas (in-process, KV events on, priority scheduling and session
radix cache on, page size = the gateway's block size) sit behind a recorder that keeps
every POST body they receive. The bundle: program-FCFS priority (Continuum's), KVFlow's
cache hints over a coder -> reviewer loop, and a scripted router (a session's first call
on sim-0, the rest on sim-1) that records the views it is shown. A real async openai
client runs three tagged sessions; the test then checks what reached the engines.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import openai
import pytest

from pythia_sdk.protocol import AgentTags, encode_headers
from pythia_server.config import GatewayConfig
from pythia_server.engine.types import EngineConfig
from pythia_server.gateway.app import build_app
from pythia_server.gateway.command import sim_policy_args
from pythia_server.policy.baselines.continuum import ProgramFcfsPriority
from pythia_server.policy.baselines.kvflow import KVFlowCacheHints, WorkflowGraph
from pythia_server.policy.baselines.registry import make_policy
from pythia_server.policy.types import (
    CallInfo,
    EngineSettings,
    PolicyBundle,
    ReplicaView,
    RouteDecision,
)
from pythia_server.sglang_backend.replica_specs import free_ports
from pythia_server.sglang_backend.sim_server import SimServerConfig
from pythia_server.sglang_backend.sim_server import build_app as build_sim_app
from pythia_server.tokens import synthetic_text
from tests.pythia_server.gateway.servers import ServerThread

BLOCK = 16
MODEL = "sim-model"
WORKFLOW = "review"
CODER_ROLE = "You are the coder. " + "".join(synthetic_text(300, seed=1))
REVIEWER_ROLE = "You are the reviewer. " + "".join(synthetic_text(300, seed=2))


class Recorder:
    """ASGI wrapper keeping (path, JSON body) of every POST the replica receives."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.posts: list[tuple[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        self.posts.append((scope["path"], json.loads(body) if body else None))
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def bodies(self, path: str) -> list[Any]:
        return [body for p, body in self.posts if p == path]


@dataclass
class ScriptedRouter:
    """A session's first call on sim-0, the rest on sim-1 (so warms have somewhere to go)."""

    name: str = "scripted"
    seen: set[str] = field(default_factory=set)
    views: list[tuple[str | None, dict[str, ReplicaView]]] = field(default_factory=list)

    def route(self, call: CallInfo, replicas: Sequence[ReplicaView], now_s: float) -> RouteDecision:
        self.views.append((call.tags.agent, {v.replica_id: v for v in replicas}))
        session = call.tags.session or ""
        target = "sim-1" if session in self.seen else "sim-0"
        self.seen.add(session)
        ids = [v.replica_id for v in replicas]
        return RouteDecision(target if target in ids else ids[0], "scripted")

    def on_finish(self, call: CallInfo, replica_id: str, now_s: float) -> None:
        return None


def sim_config(seed: int) -> SimServerConfig:
    pub, replay = free_ports(2)
    kv = json.dumps({"publisher": "zmq", "endpoint": f"tcp://127.0.0.1:{pub}",
                     "replay_endpoint": f"tcp://127.0.0.1:{replay}", "topic": ""})
    engine = replace(EngineConfig(), page_size=BLOCK, enable_priority_scheduling=True,
                     enable_session_radix_cache=True)
    return SimServerConfig(model=MODEL, speedup=10.0, seed=seed, engine=engine, kv_events_config=kv)


@dataclass
class Live:
    url: str
    recorders: dict[str, Recorder]
    router: ScriptedRouter
    gateway: Any


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    recorders = {f"sim-{i}": Recorder(build_sim_app(sim_config(i))) for i in range(2)}
    sims = {rid: ServerThread(r).start() for rid, r in recorders.items()}
    router = ScriptedRouter()
    graph = WorkflowGraph.chain(WORKFLOW, ["coder", "reviewer"], loop=True)
    bundle = PolicyBundle("live-test", router, priority=ProgramFcfsPriority(),
                          cache_hints=KVFlowCacheHints([graph], block_size=BLOCK),
                          engine=EngineSettings(enable_priority_scheduling=True))
    config = GatewayConfig(db_path=str(tmp_path / "pythia.db"), health_interval_s=0.2, block_size=BLOCK)
    app = build_app(config, [(rid, t.url) for rid, t in sims.items()], bundle=bundle)
    gateway = ServerThread(app).start()
    yield Live(gateway.url, recorders, router, app.state.gateway)
    gateway.stop()
    for t in sims.values():
        t.stop()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def post_json(url: str, data: bytes) -> int:
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def policy_state(url: str) -> dict[str, Any]:
    return get_json(url + "/pythia/api/replicas")["policy"]


async def wait_for(predicate: Any, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def warms_settled(url: str) -> bool:
    warms = policy_state(url)["warms"]
    return warms["scheduled"] == warms["sent"] + warms["resident"] + warms["dropped"]


async def run_session(client: openai.AsyncOpenAI, url: str, session: str, task: str) -> None:
    def headers(agent: str) -> dict[str, str]:
        return encode_headers(AgentTags(WORKFLOW, session, agent))

    first = [{"role": "system", "content": CODER_ROLE}, {"role": "user", "content": task}]
    code = await client.chat.completions.create(model=MODEL, messages=first, max_tokens=8,  # type: ignore[arg-type]
                                                extra_headers=headers("coder"), extra_body={"ignore_eos": True})
    reply = code.choices[0].message.content or ""
    await client.chat.completions.create(
        model=MODEL, max_tokens=8, extra_headers=headers("reviewer"), extra_body={"ignore_eos": True},
        messages=[{"role": "system", "content": REVIEWER_ROLE}, {"role": "user", "content": "Review: " + reply}])
    await wait_for(lambda: warms_settled(url), "the warms to be sent")
    again = [*first, {"role": "assistant", "content": reply}, {"role": "user", "content": "Fix the review."}]
    await client.chat.completions.create(model=MODEL, messages=again, max_tokens=8,  # type: ignore[arg-type]
                                         extra_headers=headers("coder"), extra_body={"ignore_eos": True})


def end_session_span(session: str) -> bytes:
    def attr(key: str, value: str) -> dict[str, Any]:
        return {"key": key, "value": {"stringValue": value}}

    end_ns = time.time_ns()
    span = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
            "name": f"invoke_workflow {WORKFLOW}", "kind": 1, "startTimeUnixNano": str(end_ns - 10**9),
            "endTimeUnixNano": str(end_ns),
            "attributes": [attr("gen_ai.operation.name", "invoke_workflow"), attr("pythia.workflow", WORKFLOW),
                           attr("pythia.session", session)]}
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()


async def test_live_path_drives_the_whole_bundle(live: Live) -> None:
    client = openai.AsyncOpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
    sessions = ["s1", "s2", "s3"]
    for i, session in enumerate(sessions):
        await run_session(client, live.url, session, f"Task {i}: " + "".join(synthetic_text(40, seed=10 + i)))

    # Priority: every call reached its engine with SGLang's priority (program FCFS, in range).
    chats = [b for r in live.recorders.values() for b in r.bodies("/v1/chat/completions")]
    assert len(chats) == 9
    assert all(isinstance(b.get("priority"), int) and -(2**31) <= b["priority"] <= 0 for b in chats)
    by_session: dict[int, set[str]] = {}
    for rec in live.recorders.values():
        for body in rec.bodies("/v1/chat/completions"):
            by_session.setdefault(body["priority"], set()).add(body["rid"])
    assert len(by_session) == 3  # one priority per program (session), earlier sessions more urgent
    # Session: each call carries its session tag as SGLang's session_id (both replicas run the
    # session radix cache), so the engine holds the session's KV until /close_session.
    assert sorted(b["session_id"] for b in chats) == sorted(["s1", "s2", "s3"] * 3)

    # Warms: prefill-only /generate on sim-1 (where the reviewer ran), counted, and hit by coder #2.
    warms = [b for b in live.recorders["sim-1"].bodies("/generate") if b["rid"].startswith("pythia-warm-")]
    assert len(warms) == 3
    assert all(b["sampling_params"] == {"max_new_tokens": 0} and len(b["input_ids"]) % BLOCK == 0 for b in warms)
    assert {b["session_id"] for b in warms} <= set(sessions) and all(b.get("session_id") for b in warms)
    state = policy_state(live.url)
    assert state["warms"]["sent"] >= 3 and state["warms"]["hits"] == 3, state["warms"]
    assert state["priorities_sent"] == 9
    # The report's cache-action section counts the same warms, per workflow type.
    workflows = get_json(live.url + "/pythia/api/report")["workflows"]
    cache = {w["workflow"]: w.get("cache_actions") for w in workflows}
    sent = sum((c or {}).get("warms_sent", 0) for c in cache.values())
    hits = sum((c or {}).get("warm_hits", 0) for c in cache.values())
    assert (sent, hits) == (state["warms"]["sent"], state["warms"]["hits"]), cache

    # KV events filled the index and the router saw cached prefixes (role prompts shared across sessions).
    assert all(stats["batches"] > 0 and stats["blocks"] > 0 for stats in state["kv_events"].values())
    coder_again = [views for agent, views in live.router.views if agent == "coder"][-1]
    assert coder_again["sim-1"].cached_prefix_tokens >= len(warms[-1]["input_ids"])
    later_first = [views for agent, views in live.router.views if agent == "coder"][2]  # s2's first call
    assert later_first["sim-0"].cached_prefix_tokens >= BLOCK * 10  # s1's coder role prompt, via KV events

    # Load polling: the views carry the engines' /v1/loads numbers; features are exposed.
    assert all(v.total_kv_tokens == EngineConfig().max_total_num_tokens for _, views in live.router.views
               for v in views.values())
    replicas = get_json(live.url + "/pythia/api/replicas")["replicas"]
    assert all(r["features"]["features"]["priority_scheduling"]["enabled"] for r in replicas)
    assert all(r["features"]["features"]["session_radix_cache"]["enabled"] for r in replicas)

    # Session end (the SDK's root span): /close_session on every replica that served it.
    for session in sessions:
        assert await asyncio.to_thread(post_json, live.url + "/v1/traces", end_session_span(session)) == 200
    for rid in ("sim-0", "sim-1"):
        await wait_for(lambda rid=rid: {b["session_id"] for b in live.recorders[rid].bodies("/close_session")}
                       == set(sessions), f"/close_session on {rid}")
    assert policy_state(live.url)["sessions_closed"] == 6

    # Abort: a stream the client drops is aborted on its engine, which frees the request.
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Write a very long story."}], max_tokens=20000,
        stream=True, extra_headers=encode_headers(AgentTags(WORKFLOW, "s4", "coder")),
        extra_body={"ignore_eos": True})
    async for _chunk in stream:
        break
    await stream.close()
    sim0 = live.recorders["sim-0"]
    await wait_for(lambda: sim0.bodies("/abort_request"), "/abort_request")
    (aborted,) = sim0.bodies("/abort_request")
    assert aborted["rid"] == sim0.bodies("/v1/chat/completions")[-1]["rid"]
    sim0_url = live.gateway.pool.get("sim-0").url
    await wait_for(lambda: get_json(sim0_url + "/v1/loads")["loads"][0]["num_running_reqs"] == 0,
                   "the engine to free the aborted request", timeout_s=5.0)
    await client.close()


def test_sim_flags_follow_the_bundle() -> None:
    """``serve`` gives spawned sims the bundle's flags, the block size as page size, and KV events."""
    argv = sim_policy_args(make_policy("continuum").engine, 32, (5557, 5558))
    assert argv[:2] == ["--page-size", "32"] and "--enable-priority-scheduling" in argv
    events = json.loads(argv[argv.index("--kv-events-config") + 1])
    assert events["endpoint"] == "tcp://127.0.0.1:5557" and events["replay_endpoint"] == "tcp://127.0.0.1:5558"
    assert "--enable-priority-scheduling" not in sim_policy_args(make_policy("sglang").engine, 64, None)
    assert "--enable-session-radix-cache" in sim_policy_args(make_policy("pythia").engine, 64, None, sessions=True)
    assert "--enable-session-radix-cache" not in sim_policy_args(make_policy("sglang").engine, 64, None)
    pythia = sim_policy_args(make_policy("pythia").engine, 64, None)
    assert pythia[pythia.index("--max-running-requests") + 1] == str(make_policy("pythia").engine.max_running_requests)
    assert "--max-running-requests" not in sim_policy_args(make_policy("sglang").engine, 64, None)
    assert "--enable-mixed-chunk" in pythia
    assert "--enable-mixed-chunk" not in sim_policy_args(make_policy("sglang").engine, 64, None)


def test_unknown_policy_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pythia_server.cli import main

    assert main(["serve", "--policy", "nope", "--db", str(tmp_path / "x.db")]) == 2
    err = capsys.readouterr().err
    assert "unknown policy 'nope'" in err and len(err.strip().splitlines()) == 1


async def test_kv_index_is_reset_when_a_replica_goes_down_and_resynced_when_back() -> None:
    """A replica the gateway stops trusting holds nothing in the index until it is ready again."""
    from pythia_server.gateway.driver import PolicyDriver
    from pythia_server.gateway.pool import ReplicaPool
    from pythia_server.sglang_backend.client import make_session
    from pythia_server.sglang_backend.kv_index import KvEventHub

    sim = ServerThread(build_sim_app(sim_config(7))).start()
    session = make_session()
    pool = ReplicaPool([("sim-0", sim.url)], session, health_interval_s=60.0)
    driver = PolicyDriver(make_policy("sglang"), pool, BLOCK, KvEventHub())
    pool.on_ready, pool.on_down = driver.replica_ready, driver.replica_down
    try:
        await pool.start()
        assert driver.supports("sim-0", "kv_events") and pool.get("sim-0").features is not None
        reply = await pool.get("sim-0").client.post("/generate", {"input_ids": list(range(1, 5 * BLOCK + 1)),
                                                                  "sampling_params": {"max_new_tokens": 1}})
        await reply.read()
        index = driver.hub.index  # type: ignore[union-attr]
        await wait_for(lambda: index.block_count("sim-0") >= 5, "KV events for the prompt")
        pool.mark_unhealthy("sim-0", "test: stopped answering")
        assert index.block_count("sim-0") == 0
        await pool.probe_all()  # healthy again: resynced from the replay socket
        assert pool.get("sim-0").healthy and index.block_count("sim-0") >= 5
    finally:
        await pool.stop()
        await driver.stop()
        await session.close()
        sim.stop()
