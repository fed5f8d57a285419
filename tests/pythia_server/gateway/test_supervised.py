"""The gateway with supervised simulated replicas: one dies, calls go on, it comes back."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import openai

from pythia_sdk.protocol import AgentTags, encode_headers
from pythia_server.config import GatewayConfig
from pythia_server.sglang_backend.launcher import (
    ReplicaState,
    SupervisorConfig,
    sim_replica_specs,
)
from tests.pythia_server.gateway.conftest import eventually, supervised_gateway


async def test_a_dead_replica_is_restarted_and_served_again(tmp_path: Path) -> None:
    specs = sim_replica_specs(2, extra_args=["--speedup", "100", "--model", "sim-model"], log_dir=tmp_path / "logs")
    config = GatewayConfig(db_path=str(tmp_path / "p.db"), port=0, health_interval_s=0.2, policy="sglang")
    supervisor_config = SupervisorConfig(ready_timeout_s=60, health_interval_s=0.2, backoff_initial_s=0.1)
    async with supervised_gateway(config, specs, supervisor_config) as (gateway, supervisor, url):
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
