"""Call records of known shape for the report tests (not a test module itself).

``deep_research``: planner, 2-4 researchers in parallel, writer, reviewer, and 0-2 more
writer/reviewer rounds, with tool gaps between steps. ``HOSTILE`` is a second workflow
type whose workflow, agent and session names are markup, to prove escaping.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

from pythia_server.store.records import CallRecord

HOSTILE = '<img src=x onerror="window.__pwned=1">'
HOSTILE_AGENT = '"><script>window.__pwned=2</script>'

T0 = 1_790_000_000.0  # a fixed Unix time: the tests never read the clock


def _call(n: int, workflow: str, session: str, agent: str, start: float, dur: float,
          rng: random.Random, parent: str | None = None) -> CallRecord:
    prompt = rng.randint(600, 3000)
    output = rng.randint(40, 400)
    queue_ms = rng.uniform(0, 40)
    return CallRecord(
        call_id=f"c{n:05d}", workflow=workflow, session=session, agent=agent, parent=parent,
        call_tag=None, model="sim-llama", replica=f"r{n % 2}", route="chat", stream=False,
        prompt_tokens=prompt, cached_tokens=rng.randint(0, prompt), output_tokens=output,
        queue_ms=queue_ms, ttft_ms=queue_ms + rng.uniform(20, 120), e2e_ms=dur * 1000.0,
        finish_reason="stop", status="ok", error=None, started_at=start, finished_at=start + dur,
        block_size=64, block_hashes=(),
    )


def deep_research_calls(sessions: int = 12, seed: int = 7,
                        workflow: str = "deep_research") -> list[CallRecord]:
    rng = random.Random(seed)
    calls: list[CallRecord] = []
    for s in range(sessions):
        session = f"{workflow}-s{s:03d}"
        t = T0 + s * 20.0
        def add(agent: str, start: float, dur: float, parent: str | None = None,
                session: str = session) -> float:
            calls.append(_call(len(calls), workflow, session, agent, start, dur, rng, parent))
            return start + dur
        t = add("planner", t, rng.uniform(0.5, 1.5)) + rng.uniform(0.1, 0.6)
        ends = [add("researcher", t + 0.01 * i, rng.uniform(1.0, 3.0), parent="planner")
                for i in range(rng.randint(2, 4))]
        t = max(ends) + rng.uniform(0.2, 1.0)
        t = add("writer", t, rng.uniform(1.0, 2.0)) + 0.05
        t = add("reviewer", t, rng.uniform(0.3, 0.8)) + 0.05
        for _ in range(rng.randint(0, 2)):
            t = add("writer", t, rng.uniform(0.8, 1.5)) + 0.05
            t = add("reviewer", t, rng.uniform(0.3, 0.8)) + 0.05
    return calls


def hostile_calls(sessions: int = 3, seed: int = 3) -> list[CallRecord]:
    rng = random.Random(seed)
    calls: list[CallRecord] = []
    for s in range(sessions):
        t = T0 + 5 + s * 30.0
        for agent in ("main", HOSTILE_AGENT, "main"):
            calls.append(_call(1000 + len(calls), HOSTILE, f'<b>s{s}</b>', agent, t, 0.7, rng))
            t += 1.2
    return calls


def sample_calls() -> list[CallRecord]:
    return deep_research_calls() + hostile_calls()


CACHE_ACTIONS = {
    "deep_research": {
        "warms_sent": 40, "warm_hits": 31, "warms_wasted": 6, "warm_tokens": 52_000,
        "hit_tokens": 40_100,
        "recent": [{"at_s": T0 + 100 + i, "action": "warm", "agent": "writer", "replica": "r0",
                    "tokens": 1300, "outcome": "hit" if i % 4 else "wasted",
                    "reason": "next agent writer p=0.93"} for i in range(8)],
    }
}

AUTOSCALER = {
    "enabled": True, "policy": "lookahead", "replicas": 3,
    "decisions": [
        {"at_s": T0 + 30, "from_replicas": 2, "to_replicas": 3, "reason": "fan-out of 4 researchers predicted"},
        {"at_s": T0 + 140, "from_replicas": 3, "to_replicas": 2, "reason": "no live session reaches r2"},
        {"at_s": T0 + 200, "from_replicas": 2, "to_replicas": 3, "reason": "burst of planner calls"},
    ],
}

# The live report's ``replicas`` (docs/reports.md): r0 lacks priority scheduling under a
# policy that sets priorities; r1 is an OpenAI-only upstream; r2's version string is hostile.
REPLICAS = [
    {"replica": "r0", "sglang_version": "0.4.6", "server_info": True, "degraded": True, "missing": [
        {"feature": "priority_scheduling", "used_by_policy": True,
         "reason": "this SGLang has no priority scheduling (older version)"},
        {"feature": "kv_events", "used_by_policy": False,
         "reason": "--kv-events-config off: prefix index falls back to the gateway's own bookkeeping"}]},
    {"replica": "r1", "sglang_version": None, "server_info": False, "degraded": False, "missing": []},
    {"replica": "r2", "sglang_version": HOSTILE, "server_info": True, "degraded": False, "missing": []},
]

# --- a real HTTP server on loopback for the page tests -------------------------------

@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run ``app`` under uvicorn on a free loopback port in a thread; yield its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
