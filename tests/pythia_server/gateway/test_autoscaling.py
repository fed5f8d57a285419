"""The live autoscaler: scalers act on real simulated-engine processes behind the gateway."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from pythia_sdk.protocol import AgentTags, encode_headers
from pythia_server.cli import CliError, build_parser
from pythia_server.config import GatewayConfig
from pythia_server.fleet import ReplicaFleet
from pythia_server.gateway.autoscaling import (
    LiveScaleDriver,
    make_live_scaler,
    setup_from_args,
)
from pythia_server.gateway.command import sim_spec_factory
from pythia_server.policy.baselines.registry import make_policy
from pythia_server.policy.pythia.autoscale import ReactiveAutoscaler, ReactiveConfig
from pythia_server.policy.types import ScaleDecision, ScaleTick
from pythia_server.sglang_backend.launcher import ReplicaSupervisor, SupervisorConfig
from tests.pythia_server.gateway.conftest import eventually, supervised_gateway

SPEEDUP = 20.0


class ScriptedScaler:
    """Returns the decisions it is given, one per tick, then holds the last target."""

    name = "scripted"

    def __init__(self, decisions: Iterator[ScaleDecision]) -> None:
        self.decisions = decisions
        self.ticks: list[ScaleTick] = []
        self.last = ScaleDecision(1, "start", 0.0)

    def decide(self, tick: ScaleTick) -> ScaleDecision:
        self.ticks.append(tick)
        self.last = next(self.decisions, ScaleDecision(self.last.target_replicas, "hold", tick.now_s + 0.2))
        return self.last


@dataclass
class Live:
    gateway: Any
    supervisor: ReplicaSupervisor
    client: openai.AsyncOpenAI

    def replica_ids(self) -> list[str]:
        return sorted(r.replica_id for r in self.gateway.pool.replicas())

    def served_by(self) -> dict[str, int]:
        return {r.replica_id: r.served for r in self.gateway.pool.replicas()}


def serve_args(tmp_path: Path, *extra: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", "--db", str(tmp_path / "p.db"), "--speedup", str(SPEEDUP),
                                      "--sim-arg=--model=sim-model", *extra])


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    config = GatewayConfig(db_path=str(tmp_path / "p.db"), port=0, health_interval_s=0.2, policy="sglang")
    args = serve_args(tmp_path)
    first = sim_spec_factory(args, str(tmp_path / "logs"), config)("sim-0")
    async with supervised_gateway(config, [first], SupervisorConfig(ready_timeout_s=60, health_interval_s=0.2)) \
            as (gateway, supervisor, url):
        gateway.make_spec = sim_spec_factory(args, str(tmp_path / "logs"), config, cold_start_s=20.0)  # 1 s wall
        client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0,
                                    default_headers=encode_headers(AgentTags("wf", "s", "a")))
        yield Live(gateway, supervisor, client)
        await client.close()


def start_driver(live: Live, scaler: Any) -> LiveScaleDriver:
    gateway = live.gateway
    fleet = ReplicaFleet(cold_start_s=1.0, id_prefix="sim-")
    fleet.add_serving(gateway.driver.now_s())
    driver = LiveScaleDriver(scaler, fleet, gateway.pool, live.supervisor, gateway.make_spec,
                             gateway.driver.now_s, origin_s=gateway.driver.origin_s, drain_timeout_s=20.0,
                             on_removed=gateway.driver.replica_removed)
    gateway.autoscaler = driver
    driver.start()
    return driver


async def ask(client: openai.AsyncOpenAI, tokens: int = 4, user: str = "hello") -> None:
    """A call that decodes exactly ``tokens`` (SGLang's ``ignore_eos``), so its length is known."""
    await client.chat.completions.create(model="sim-model", messages=[{"role": "user", "content": user}],
                                         max_tokens=tokens, extra_body={"ignore_eos": True})


async def test_scale_up_cold_starts_a_replica_then_drain_stops_it(live: Live) -> None:
    now = live.gateway.driver.now_s
    scaler = ScriptedScaler(iter([ScaleDecision(2, "burst predicted", now() + 0.2)]))
    driver = start_driver(live, scaler)
    assert await eventually(lambda: "sim-1" in live.replica_ids(), 5)
    started_at = time.monotonic()
    # Cold start: the new engine is not listening yet, so nothing is routed to it.
    assert driver.fleet.starting and not live.gateway.pool.get("sim-1").healthy
    assert await eventually(lambda: live.gateway.pool.get("sim-1").healthy, 30)
    assert time.monotonic() - started_at >= 0.5  # 20 engine seconds at speed-up 20, minus polling slack
    assert await eventually(lambda: driver.fleet.serving == ["sim-0", "sim-1"], 5)
    await asyncio.gather(*(ask(live.client, user=f"hello {i}") for i in range(8)))
    assert live.served_by()["sim-1"] > 0  # the router uses the new replica

    # Release it: calls still running on it finish first, then its process stops.
    running = asyncio.gather(*(ask(live.client, tokens=400, user=f"long {i}") for i in range(4)))
    await asyncio.sleep(0.1)
    scaler.decisions = iter([ScaleDecision(1, "demand gone", now() + 0.2, drain=("sim-1",))])
    assert await eventually(lambda: driver.fleet.draining == ["sim-1"] or "sim-1" not in live.replica_ids(), 5)
    await running  # nothing lost
    assert await eventually(lambda: live.replica_ids() == ["sim-0"], 30)
    assert [s.replica_id for s in live.supervisor.status()] == ["sim-0"]
    assert await eventually(lambda: "sim-1" not in live.gateway.driver.hub.stats(), 5)  # its KV events unfollowed
    spans = {span.replica_id: span for span in driver.fleet.spans()}
    assert spans["sim-1"].serving_s is not None and spans["sim-1"].removed_s is not None
    await ask(live.client)  # still serving on the one left

    report = driver.describe()
    assert report["enabled"] and report["policy"] == "scripted" and report["peak_replicas"] == 2
    assert report["replica_seconds"] > spans["sim-1"].seconds(0.0, 1e9)  # both replicas' time, cold start included
    assert [(d["from_replicas"], d["to_replicas"], d["reason"]) for d in report["decisions"]] == [
        (1, 2, "burst predicted"), (2, 1, "demand gone")]
    assert all(d["at_s"] > 1e9 for d in report["decisions"])  # Unix seconds, as reports expect


async def test_reactive_scaler_adds_a_replica_under_load_live(live: Live) -> None:
    scaler = ReactiveAutoscaler(ReactiveConfig(target_calls_per_replica=2, tick_s=0.2, stable_window_s=2.0,
                                               panic_window_s=0.4, min_replicas=1, max_replicas=2))
    driver = start_driver(live, scaler)
    load = asyncio.gather(*(ask(live.client, tokens=3000, user=f"busy {i}") for i in range(12)))
    assert await eventually(lambda: "sim-1" in live.replica_ids(), 20), (list(driver.log), live.replica_ids())
    assert "panic" in driver.log[-1].reason or driver.log[-1].target_replicas == 2
    await load
    assert await eventually(lambda: live.gateway.pool.get("sim-1").healthy, 30)


async def test_the_report_shows_the_live_autoscaler(live: Live) -> None:
    start_driver(live, ScriptedScaler(iter([])))
    import httpx

    base = str(live.client.base_url).removesuffix("/v1/")
    await ask(live.client)
    async with httpx.AsyncClient() as http:
        report = (await http.get(f"{base}/pythia/api/report")).json()
    assert report["autoscaler"]["enabled"] and report["autoscaler"]["policy"] == "scripted"


def test_phase_adaptive_needs_a_pythia_bundle() -> None:
    with pytest.raises(ValueError, match="phase-adaptive autoscaler forecasts"):
        make_live_scaler("phase-adaptive", make_policy("sglang"), cold_start_s=1, min_replicas=1, max_replicas=2)
    scaler = make_live_scaler("phase-adaptive", make_policy("pythia"), cold_start_s=1, min_replicas=1,
                              max_replicas=2)
    assert scaler.name == "phase-adaptive"
    # Engine seconds become wall seconds: a 10x engine gets windows, ticks and cold start 10x shorter.
    fast = make_live_scaler("phase-adaptive", make_policy("pythia"), cold_start_s=30, min_replicas=1,
                            max_replicas=2, target_calls_per_replica=32, speedup=10)
    assert fast.scaler.config.cold_start_s == pytest.approx(3.0)
    assert fast.scaler.config.step_s == pytest.approx(1.0)
    reactive = fast.scaler.reactive.config
    assert (reactive.stable_window_s, reactive.panic_window_s, reactive.tick_s) == pytest.approx((6.0, 0.6, 0.2))
    assert reactive.target_calls_per_replica == 32
    with pytest.raises(ValueError, match="unknown autoscaler"):
        make_live_scaler("kpa", make_policy("pythia"), cold_start_s=1, min_replicas=1, max_replicas=2)


@pytest.mark.parametrize(("flags", "message"), [
    (["--min-replicas", "2"], "need --autoscale"),
    (["--autoscale", "reactive", "--backend", "sglang"], "needs --backend sim"),
    (["--autoscale", "reactive", "--backend-url", "http://127.0.0.1:1"], "needs --backend sim"),
    (["--autoscale", "reactive", "--replicas", "3", "--max-replicas", "2"], "<= --max-replicas"),
    (["--autoscale", "reactive", "--cold-start-s", "-1"], "must not be negative"),
    (["--autoscale", "phase-adaptive", "--policy", "sglang"], "use --autoscale reactive"),
    (["--autoscale", "reactive", "--scale-target-calls", "0"], "must be positive"),
])
def test_bad_autoscale_flags_get_a_clear_error(tmp_path: Path, flags: list[str], message: str) -> None:
    args = serve_args(tmp_path, *flags)
    config = GatewayConfig(db_path=str(tmp_path / "p.db"), policy=args.policy or "pythia")
    with pytest.raises(CliError, match=message):
        setup_from_args(args, config, None)
