from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pythia_server.config import GatewayConfig
from pythia_server.gateway.app import Gateway, build_app
from pythia_server.sglang_backend.sim_server import SimServerConfig
from pythia_server.sglang_backend.sim_server import build_app as build_sim_app
from tests.pythia_server.gateway.servers import FakeSGLang, ServerThread

SIM_MODEL = "sim-model"


@dataclass
class RunningGateway:
    server: ServerThread
    gateway: Gateway
    db_path: Path

    @property
    def url(self) -> str:
        return self.server.url


def start_gateway(tmp_path: Path, backends: list[tuple[str, str]], **changes: object) -> RunningGateway:
    # Round robin unless a test asks otherwise: the fault tests rely on calls spreading.
    changes.setdefault("policy", "sglang")
    changes.setdefault("health_interval_s", 0.2)
    config = GatewayConfig(db_path=str(tmp_path / "pythia.db"), **changes)
    app = build_app(config, backends)
    server = ServerThread(app).start()
    return RunningGateway(server, app.state.gateway, tmp_path / "pythia.db")


@pytest.fixture
def fakes() -> Iterator[list[tuple[FakeSGLang, ServerThread]]]:
    replicas = [FakeSGLang(), FakeSGLang()]
    threads = [ServerThread(f.app).start() for f in replicas]
    yield list(zip(replicas, threads))
    for t in threads:
        t.stop()


@pytest.fixture
def gateway(tmp_path: Path, fakes: list[tuple[FakeSGLang, ServerThread]]) -> Iterator[RunningGateway]:
    running = start_gateway(tmp_path, [(f"r{i}", t.url) for i, (_, t) in enumerate(fakes)])
    yield running
    running.server.stop()


@pytest.fixture(scope="module")
def shared_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """One gateway over one fake replica for a module's read-only checks."""
    fake = FakeSGLang()
    replica = ServerThread(fake.app).start()
    running = start_gateway(tmp_path_factory.mktemp("shared"), [("r0", replica.url)])
    yield running
    running.server.stop()
    replica.stop()


@pytest.fixture
def sims() -> Iterator[list[ServerThread]]:
    """Two simulated SGLang engines in-process (H1's sim_server), 100x faster than real time."""
    threads = [ServerThread(build_sim_app(SimServerConfig(model=SIM_MODEL, speedup=100.0, seed=i))).start()
               for i in range(2)]
    yield threads
    for t in threads:
        t.stop()


@pytest.fixture
def sim_gateway(tmp_path: Path, sims: list[ServerThread]) -> Iterator[RunningGateway]:
    running = start_gateway(tmp_path, [(f"sim-{i}", t.url) for i, t in enumerate(sims)])
    yield running
    running.server.stop()


def calls(url: str) -> list[dict[str, Any]]:
    """The gateway's recorded calls, newest first, from its JSON API."""
    with urllib.request.urlopen(url + "/pythia/api/calls", timeout=10) as response:
        return json.loads(response.read())["calls"]


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or the time runs out; its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@contextlib.asynccontextmanager
async def supervised_gateway(config: GatewayConfig, specs: list[Any],
                             supervisor_config: Any) -> AsyncIterator[tuple[Gateway, Any, str]]:
    """The gateway in this event loop over supervised replica processes, as ``serve`` wires them.

    Yields (gateway, supervisor, base URL of the OpenAI API); stops all of it afterwards.
    """
    import asyncio

    import uvicorn

    from pythia_server.sglang_backend.launcher import (
        ReplicaEvent,
        ReplicaState,
        ReplicaSupervisor,
    )

    app = build_app(config, [(s.replica_id, s.url) for s in specs])
    gateway = app.state.gateway

    def on_state_change(event: ReplicaEvent) -> None:
        if gateway.pool is not None and event.state is not ReplicaState.STOPPED:
            gateway.pool.set_health(event.replica_id, event.state is ReplicaState.READY, event.reason)

    supervisor = ReplicaSupervisor(specs, on_state_change=on_state_change, config=supervisor_config)
    await supervisor.start()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve())
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert server.started
        yield gateway, supervisor, f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/v1"
    finally:
        if gateway.autoscaler is not None:
            await gateway.autoscaler.stop()
        server.should_exit = True
        await serving
        await supervisor.stop()


async def eventually(condition: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    """``wait_for`` for tests on the event loop: poll without blocking it."""
    import asyncio

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.05)
    return bool(condition())
