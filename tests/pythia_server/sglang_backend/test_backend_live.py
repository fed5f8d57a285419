"""The live path with simulated engines as subprocesses: supervisor, /server_info features, KV events.

Each replica is `pythia-server sim` with SGLang's `--kv-events-config`, spawned and watched by
the ReplicaSupervisor; the gateway side discovers the publisher from `/server_info` (as it
would with real SGLang) and keeps an exact prefix index while requests warm, evict and
flush the replica's cache, and across a crash and restart.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import aiohttp

from pythia_server.sglang_backend.flags import FeatureSet, kv_events_config_json
from pythia_server.sglang_backend.kv_index import KvEventHub, endpoints_from_server_info
from pythia_server.sglang_backend.launcher import (
    ReplicaEvent,
    ReplicaState,
    ReplicaSupervisor,
    SupervisorConfig,
    free_ports,
    sim_replica_specs,
)
from pythia_server.tokens import block_hashes

PAGE = 16
CONFIG = SupervisorConfig(
    ready_timeout_s=60, startup_probe_interval_s=0.1, health_interval_s=0.2, backoff_initial_s=0.1, stop_grace_s=10
)


async def wait_for(predicate: Callable[[], bool], bound_s: float = 30.0) -> None:
    for _ in range(int(bound_s / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never became true")


async def post(session: aiohttp.ClientSession, url: str, body: dict) -> dict:
    async with session.post(url, json=body) as response:
        assert response.status == 200, await response.text()
        return await response.json() if response.content_type == "application/json" else {}


async def test_sim_replicas_under_supervision_publish_kv_events(tmp_path: Path) -> None:
    pub, replay = free_ports(2)
    extra = [
        "--page-size",
        str(PAGE),
        "--speedup",
        "100",
        "--kv-tokens",
        "4096",
        "--schedule-policy",
        "fcfs",
        "--enable-priority-scheduling",
        "--radix-eviction-policy",
        "priority",
        "--kv-events-config",
        kv_events_config_json("127.0.0.1", pub, replay),
    ]
    (spec,) = sim_replica_specs(1, extra_args=extra, log_dir=tmp_path)
    events: list[ReplicaEvent] = []
    hub = KvEventHub()
    supervisor = ReplicaSupervisor([spec], config=CONFIG, on_state_change=events.append)
    await supervisor.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(spec.url + "/server_info") as response:
                info = await response.json()
            features = FeatureSet.from_server_info(info)
            assert features.enabled("priority_scheduling") and features.enabled("kv_events")
            assert features.enabled("priority_eviction")

            ((pub_ep, replay_ep, topic),) = endpoints_from_server_info(info, "127.0.0.1")
            assert pub_ep == f"tcp://127.0.0.1:{pub}" and replay_ep == f"tcp://127.0.0.1:{replay}"
            await hub.attach(spec.replica_id, pub_ep, replay_ep, topic)

            prompt = list(range(1000, 1000 + 5 * PAGE))  # five full pages
            hashes = block_hashes(prompt, PAGE)
            await post(
                http,
                spec.url + "/generate",
                {"input_ids": prompt, "sampling_params": {"max_new_tokens": 0}, "rid": "warm-1"},
            )
            await wait_for(lambda: hub.index.matched_blocks(spec.replica_id, hashes) == 5)

            other = list(range(5000, 5000 + 3 * PAGE))
            call = block_hashes(prompt[: 2 * PAGE] + other, PAGE)
            assert hub.index.matched_blocks(spec.replica_id, call) == 2
            assert hub.index.matched_tokens(spec.replica_id, call) == 2 * PAGE

            await post(http, spec.url + "/flush_cache", {})
            await wait_for(lambda: hub.index.block_count(spec.replica_id) == 0)

            # Crash: the supervisor restarts it; the hub is told and forgets, then follows the new process.
            await post(http, spec.url + "/generate", {"input_ids": prompt, "sampling_params": {"max_new_tokens": 0}})
            await wait_for(lambda: hub.index.matched_blocks(spec.replica_id, hashes) == 5)
            pid = supervisor.status()[0].pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            await wait_for(lambda: any(e.state is ReplicaState.BACKOFF for e in events))
            hub.reset(spec.replica_id)  # the gateway's wiring of supervisor events into the hub
            # No resync call: the subscriber notices the reconnection to the new process itself.
            assert hub.index.matched_blocks(spec.replica_id, hashes) == 0
            await wait_for(
                lambda: supervisor.status()[0].state is ReplicaState.READY and supervisor.status()[0].restarts == 1
            )

            fresh = list(range(9000, 9000 + 2 * PAGE))
            await post(http, spec.url + "/generate", {"input_ids": fresh, "sampling_params": {"max_new_tokens": 0}})
            await wait_for(lambda: hub.index.matched_blocks(spec.replica_id, block_hashes(fresh, PAGE)) == 2)
            assert hub.index.matched_blocks(spec.replica_id, hashes) == 0
            assert hub.stats()[spec.replica_id].decode_errors == 0
    finally:
        await hub.close()
        await supervisor.stop()
    assert "=== pythia: start #2" in (tmp_path / "sim-0.log").read_text()
    assert json.dumps(features.as_dict())  # serialisable for the report
