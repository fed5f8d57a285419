"""The gateway with supervised simulated replicas: one dies, calls go on, it comes back."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import openai
import uvicorn

from pythia_sdk.protocol import AgentTags, encode_headers
from pythia_server.config import GatewayConfig
from pythia_server.gateway.app import build_app
from pythia_server.sglang_backend.launcher import (
    ReplicaEvent,
    ReplicaState,
    ReplicaSupervisor,
    SupervisorConfig,
    sim_replica_specs,
)


async def eventually(condition, timeout_s: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.05)
    return bool(condition())


async def test_a_dead_replica_is_restarted_and_served_again(tmp_path: Path) -> None:
    specs = sim_replica_specs(2, extra_args=["--speedup", "100", "--model", "sim-model"], log_dir=tmp_path / "logs")
    config = GatewayConfig(db_path=str(tmp_path / "p.db"), port=0, health_interval_s=0.2, policy="sglang")
    app = build_app(config, [(s.replica_id, s.url) for s in specs])
    gateway = app.state.gateway

    def on_state_change(event: ReplicaEvent) -> None:
        if gateway.pool is not None and event.state is not ReplicaState.STOPPED:
            gateway.pool.set_health(event.replica_id, event.state is ReplicaState.READY, event.reason)

    supervisor = ReplicaSupervisor(specs, on_state_change=on_state_change, config=SupervisorConfig(
        ready_timeout_s=60, health_interval_s=0.2, backoff_initial_s=0.1))
    await supervisor.start()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve())
    try:
        assert await eventually(lambda: server.started)
        url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/v1"
        client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0,
                                    default_headers=encode_headers(AgentTags("wf", "s", "a")))

        async def ask() -> str:
            reply = await client.chat.completions.create(
                model="sim-model", messages=[{"role": "user", "content": "hello"}], max_tokens=2)
            return reply.id

        for _ in range(2):
            await ask()
        (pid,) = [s.pid for s in supervisor.status() if s.replica_id == "sim-0"]
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await eventually(lambda: supervisor.status()[0].state is not ReplicaState.READY, 10)
        for _ in range(4):  # every call is served, by sim-1 while sim-0 is down
            await ask()
        assert await eventually(lambda: supervisor.status()[0].restarts == 1
                                and supervisor.status()[0].state is ReplicaState.READY)
        assert await eventually(lambda: gateway.pool.get("sim-0").healthy, 10)
        for _ in range(2):
            await ask()
        store = gateway.store
        calls = await gateway.read(store.calls)
        assert len(calls) == 8 and all(c.status == "ok" for c in calls)
        assert calls[-2].replica != calls[-1].replica  # round robin over both again
        await client.close()
    finally:
        server.should_exit = True
        await serving
        await supervisor.stop()
