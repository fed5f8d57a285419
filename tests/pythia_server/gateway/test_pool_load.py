"""The pool's view of engine load: /v1/loads when the replica has it, Prometheus /metrics otherwise."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from pythia_server.gateway.pool import ReplicaPool
from pythia_server.sglang_backend.client import make_session
from pythia_server.sglang_backend.sim_server import SimServerConfig
from pythia_server.sglang_backend.sim_server import build_app as build_sim_app
from tests.pythia_server.gateway.servers import ServerThread

METRICS = """\
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="old",tp_rank="0"} 4.0
sglang:num_queue_reqs{model_name="old",tp_rank="1"} 1.0
sglang:num_used_tokens{model_name="old",tp_rank="0"} 2048.0
sglang:max_total_num_tokens{model_name="old",tp_rank="0"} 100000.0
"""


def older_sglang(with_metrics: bool) -> Starlette:
    """An SGLang-like server without /v1/loads (404), with or without --enable-metrics."""

    async def health(_: Request) -> Response:
        return Response(status_code=200)

    async def models(_: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "old", "object": "model"}]})

    async def metrics(_: Request) -> Response:
        return PlainTextResponse(METRICS) if with_metrics else Response(status_code=404)

    return Starlette(routes=[Route("/health", health), Route("/v1/models", models), Route("/metrics", metrics)])


async def probe_once(url: str) -> ReplicaPool:
    session = make_session()
    pool = ReplicaPool([("r0", url)], session, health_interval_s=60.0)
    try:
        await pool.probe_all()
        await pool.probe_all()  # the second probe uses what the first learned
    finally:
        await session.close()
    return pool


async def test_v1_loads_when_present() -> None:
    sim = ServerThread(build_sim_app(SimServerConfig())).start()
    try:
        replica = (await probe_once(sim.url)).get("r0")
    finally:
        sim.stop()
    assert replica.loads_supported and replica.engine_total_kv_tokens and replica.engine_waiting_requests == 0


async def test_metrics_fallback_without_v1_loads() -> None:
    server = ServerThread(older_sglang(with_metrics=True)).start()
    try:
        replica = (await probe_once(server.url)).get("r0")
    finally:
        server.stop()
    assert not replica.loads_supported and replica.metrics_supported
    assert (replica.engine_waiting_requests, replica.engine_used_kv_tokens, replica.engine_total_kv_tokens) == (5, 2048, 100000)


async def test_neither_source_leaves_the_view_to_gateway_counts() -> None:
    server = ServerThread(older_sglang(with_metrics=False)).start()
    try:
        replica = (await probe_once(server.url)).get("r0")
    finally:
        server.stop()
    assert replica.healthy and not replica.loads_supported and not replica.metrics_supported
    assert replica.engine_waiting_requests is None and replica.engine_total_kv_tokens is None
