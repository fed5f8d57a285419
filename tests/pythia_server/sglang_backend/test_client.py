"""The gateway's SGLang HTTP client against the simulated engine on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from pythia_server.errors import UpstreamError, UpstreamTimeoutError, UpstreamUnavailableError
from pythia_server.sglang_backend.client import (
    SGLangClient,
    build_abort_payload,
    build_generate_payload,
    build_openai_payload,
    build_warm_payload,
    make_session,
)
from pythia_server.sglang_backend.sim_server import SimServerConfig, build_app
from tests.pythia_server.gateway.servers import ServerThread, closed_port


def test_openai_payload_strips_nvext_sets_rid_and_asks_for_usage() -> None:
    body = {"model": "m", "messages": [], "stream": True, "stream_options": {"continuous_usage_stats": False},
            "nvext": {"agent_context": {}}}
    payload = build_openai_payload(body, rid="r1", include_usage=True, priority=3)
    assert payload == {"model": "m", "messages": [], "stream": True, "rid": "r1", "priority": 3,
                       "stream_options": {"continuous_usage_stats": False, "include_usage": True}}
    assert "rid" not in body and body["stream_options"] == {"continuous_usage_stats": False}  # not mutated
    plain = build_openai_payload({"model": "m", "prompt": "x"}, rid="r2", include_usage=True)
    assert plain == {"model": "m", "prompt": "x", "rid": "r2"}  # no stream: no stream_options


def test_generate_and_abort_payloads() -> None:
    body = {"text": "hi", "sampling_params": {"max_new_tokens": 0}, "nvext": {}}
    assert build_generate_payload(body, rid="w1") == {"text": "hi", "sampling_params": {"max_new_tokens": 0},
                                                      "rid": "w1"}
    assert build_abort_payload("w1") == {"rid": "w1"}
    assert build_warm_payload((1, 2, 3), rid="w2", priority=5) == {
        "input_ids": [1, 2, 3], "sampling_params": {"max_new_tokens": 0}, "rid": "w2", "priority": 5}


def test_session_id_is_sent_when_given_and_never_over_the_callers_own() -> None:
    chat = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    assert build_openai_payload(chat, rid="r", include_usage=False, session_id="s1")["session_id"] == "s1"
    assert "session_id" not in build_openai_payload(chat, rid="r", include_usage=False, session_id=None)
    gen = {"text": "hi"}
    assert build_generate_payload(gen, rid="g", session_id="s1") == {"text": "hi", "rid": "g", "session_id": "s1"}
    assert build_warm_payload([1], rid="w", session_id="s1")["session_id"] == "s1"
    # SGLang refuses session_id beside session_params; a caller's own session field wins.
    own = {"text": "hi", "session_params": {"id": "theirs"}}
    assert "session_id" not in build_generate_payload(own, rid="g", session_id="s1")
    assert build_generate_payload({"text": "hi", "session_id": "theirs"}, rid="g", session_id="s1")["session_id"] == "theirs"


@pytest.fixture(scope="module")
def sim() -> Iterator[ServerThread]:
    server = ServerThread(build_app(SimServerConfig(model="sim-model", speedup=100.0))).start()
    yield server
    server.stop()


async def test_probes_and_control_endpoints(sim: ServerThread) -> None:
    async with make_session() as session:
        client = SGLangClient(sim.url, session)
        assert await client.health()
        assert await client.models() == ["sim-model"]
        loads = await client.loads()
        assert loads["loads"][0]["num_running_reqs"] == 0
        assert "version" in await client.server_info()
        assert await client.flush_cache()
        assert await client.abort_request("no-such-request") in (True, False)  # best effort, never raises


async def test_generate_stream_and_abort_by_rid(sim: ServerThread) -> None:
    async with make_session() as session:
        client = SGLangClient(sim.url, session)
        warm = await client.post("/generate", build_warm_payload([7] * 64, rid="warm-1"))
        assert warm.status == 200 and (await warm.read_json())["meta_info"]["completion_tokens"] == 0
        again = await client.post("/generate", build_generate_payload(
            {"input_ids": [7] * 64 + [8], "sampling_params": {"max_new_tokens": 1}}, rid="after-warm"))
        assert (await again.read_json())["meta_info"]["cached_tokens"] >= 63
        whole = await client.post("/generate", build_generate_payload(
            {"text": "hello", "sampling_params": {"max_new_tokens": 3, "ignore_eos": True}}, rid="g1"))
        data = await whole.read_json()
        assert whole.status == 200 and data["meta_info"]["completion_tokens"] == 3

        slow = SGLangClient(sim.url, session)
        response = await slow.post("/generate", build_generate_payload(
            {"text": "long", "stream": True, "sampling_params": {"max_new_tokens": 100_000, "ignore_eos": True}},
            rid="g2"))
        chunks = response.iter_chunks()
        assert (await chunks.__anext__()).startswith(b"data: ")
        assert await client.abort_request("g2")
        rest = b"".join([chunk async for chunk in chunks])
        events = [json.loads(e[6:]) for e in rest.decode().split("\n\n") if e.startswith("data: {")]
        assert events and events[-1]["meta_info"]["finish_reason"]["type"] == "abort"
        assert (await client.loads())["loads"][0]["num_running_reqs"] == 0


async def test_errors_are_translated_at_the_boundary() -> None:
    async def stall(request: Request) -> Response:
        await asyncio.sleep(1)
        return Response(b"{}")

    async def garbage(request: Request) -> Response:
        return Response(b"not json")

    server = ServerThread(Starlette(routes=[Route("/stall", stall, methods=["POST"]),
                                            Route("/v1/models", garbage)])).start()
    try:
        async with make_session(read_timeout_s=0.2) as session:
            with pytest.raises(UpstreamUnavailableError):
                await SGLangClient(f"http://127.0.0.1:{closed_port()}", session).post("/generate", {})
            assert not await SGLangClient(f"http://127.0.0.1:{closed_port()}", session).health()
            with pytest.raises(UpstreamTimeoutError):
                await SGLangClient(server.url, session).post("/stall", {})
            with pytest.raises(UpstreamError, match="JSON"):
                await SGLangClient(server.url, session).models()
    finally:
        server.stop()


async def test_first_byte_and_inter_chunk_timeouts() -> None:
    """The first chunk may take longer than later gaps; each is bounded by its own timeout."""

    async def slow_start(request: Request) -> Response:
        gaps = [float(g) for g in request.query_params["gaps"].split(",")]

        async def body() -> AsyncIterator[bytes]:
            for gap in gaps:
                await asyncio.sleep(gap)
                yield b"data: {}\n\n"

        return StreamingResponse(body(), media_type="text/event-stream")

    server = ServerThread(Starlette(routes=[Route("/s", slow_start, methods=["POST"])])).start()
    try:
        # The session's own sock_read (0.05 s) is replaced by the client's timeouts.
        async with make_session(read_timeout_s=0.05) as session:
            client = SGLangClient(server.url, session, first_byte_timeout_s=0.6, read_timeout_s=0.25)
            ok = await client.post("/s?gaps=0.3,0.1,0.1", {})
            await ok.start()
            assert await ok.read() == b"data: {}\n\n" * 3
            late = await client.post("/s?gaps=0.8", {})
            with pytest.raises(UpstreamTimeoutError, match="no answer in time"):
                await late.start()
            late.close()
            stalled = await client.post("/s?gaps=0.1,0.5", {})
            with pytest.raises(UpstreamTimeoutError, match="stalled"):
                await stalled.read()
    finally:
        server.stop()
