"""Replicas that hang: timed out (first byte, inter-chunk), retried or answered 504, quarantined.

The hanging replica is a real HTTP server on loopback that accepts the call and then never
answers (no headers; or headers and then silence; or a few chunks and then silence). The
gateway's timeouts are a fraction of a second here so each test runs in about a second.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from pythia_sdk.protocol import AgentTags, encode_headers
from pythia_server.tokens import apply_chat_template, tokenize
from tests.pythia_server.gateway.conftest import (
    RunningGateway,
    calls,
    start_gateway,
    wait_for,
)
from tests.pythia_server.gateway.servers import FakeSGLang, ServerThread

MODEL = "fake-model"
MESSAGES = [{"role": "user", "content": "Tell me a long story"}]
HEADERS = encode_headers(AgentTags(workflow="wf", session="s1", agent="teller"))
TIMEOUTS: dict[str, Any] = {"upstream_first_byte_timeout_s": 0.4, "upstream_read_timeout_s": 0.4,
                            "policy": "sglang"}


class HangingReplica:
    """Healthy on /health and /v1/models; its completions hang the way ``mode`` says.

    ``no_headers``: accepts the call, never answers; ``headers``: sends 200 and SSE headers,
    then nothing; ``mid_stream``: two chunks, then nothing; ``ok``: answers normally.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.requests: list[dict[str, Any]] = []
        self.aborted: list[str] = []
        self.normal = FakeSGLang()
        self.app = Starlette(routes=[
            Route("/health", self._health), Route("/v1/models", self._models),
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/abort_request", self._abort, methods=["POST"]),
        ])

    async def _health(self, request: Request) -> Response:
        return Response(b"")

    async def _models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    async def _abort(self, request: Request) -> Response:
        self.aborted.append((await request.json()).get("rid"))
        return Response(b"")

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        if self.mode == "ok":
            return await self.normal._openai(body, tokenize(apply_chat_template(body["messages"])), chat=True)
        if self.mode == "no_headers":
            while not await request.is_disconnected():  # hold the call until the gateway gives up
                await asyncio.sleep(0.05)
            return Response(b"")

        async def events() -> AsyncIterator[bytes]:
            if self.mode == "mid_stream":
                for piece in ("Once", " upon"):
                    chunk = {"id": body["rid"], "object": "chat.completion.chunk", "created": 0, "model": MODEL,
                             "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                    yield f"data: {json.dumps(chunk)}\n\n".encode()
            while True:
                await asyncio.sleep(3600)
                yield b""

        return StreamingResponse(events(), media_type="text/event-stream")


def serve(app: Any) -> ServerThread:
    thread = ServerThread(app)
    thread.config.timeout_graceful_shutdown = 1
    return thread.start()




def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", default_headers=HEADERS, max_retries=0, timeout=20)


@pytest.fixture
def good() -> Iterator[tuple[FakeSGLang, ServerThread]]:
    fake = FakeSGLang()
    thread = serve(fake.app)
    yield fake, thread
    thread.stop()


def _with(tmp_path: Path, hanging: HangingReplica, others: list[tuple[str, str]], **changes: Any
          ) -> tuple[ServerThread, RunningGateway]:
    hung = serve(hanging.app)
    running = start_gateway(tmp_path, [("hung", hung.url), *others], **{**TIMEOUTS, **changes})
    return hung, running


@pytest.mark.parametrize("mode", ["no_headers", "headers"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_hung_replica_is_quarantined_and_the_call_retried_elsewhere(
        tmp_path: Path, good: tuple[FakeSGLang, ServerThread], mode: str, stream: bool) -> None:
    fake, thread = good
    hanging = HangingReplica(mode)
    hung, running = _with(tmp_path, hanging, [("good", thread.url)], quarantine_base_s=60.0)
    try:
        for _ in range(2):  # round robin: one of the two first tries lands on the hung replica
            if stream:
                chunks = list(client(running.url).chat.completions.create(model=MODEL, messages=MESSAGES,
                                                                          max_tokens=3, stream=True))
                assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            else:
                answer = client(running.url).chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=3)
                assert answer.choices[0].message.content
        assert len(hanging.requests) == 1 and len(fake.requests) == 2
        # No /server_info here, so no session radix cache known: no session_id is sent.
        assert not any("session_id" in b for b in [*fake.requests, *hanging.requests])
        assert [(c["replica"], c["status"]) for c in calls(running.url)] == [("good", "ok"), ("good", "ok")]
        assert running.gateway.pool is not None
        replica = running.gateway.pool.get("hung")
        assert not replica.healthy and replica.quarantines == 1 and replica.reason.startswith("quarantined for 60s")
        assert wait_for(lambda: hanging.aborted == [hanging.requests[0]["rid"]])
        time.sleep(0.5)  # probes keep running: a quarantined replica is not let back in early
        assert not replica.healthy
    finally:
        running.server.stop()
        hung.stop()


def test_a_hung_sole_replica_gives_504_then_comes_back_after_its_backoff(tmp_path: Path) -> None:
    hanging = HangingReplica("headers")
    hung, running = _with(tmp_path, hanging, [], quarantine_base_s=0.5)
    try:
        pool = running.gateway.pool
        assert pool is not None
        replica = pool.get("hung")
        with pytest.raises(openai.APIStatusError) as caught:
            client(running.url).chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=3)
        assert caught.value.status_code == 504
        assert caught.value.body["type"] == "upstream_timeout" and caught.value.body["message"]
        assert not replica.healthy and replica.strikes == 1
        (record,) = calls(running.url)
        assert record["status"] == "error" and record["replica"] == "hung" and "in time" in record["error"]
        # Re-probed after its backoff; /health passes, so it re-enters ...
        assert wait_for(lambda: replica.healthy and replica.quarantined_until is None, timeout_s=5)
        # ... and hangs again: the next quarantine is twice as long.
        with pytest.raises(openai.APIStatusError) as again:
            client(running.url).chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=3)
        assert again.value.status_code == 504
        assert replica.strikes == 2 and replica.reason.startswith("quarantined for 1s")
        # Fixed: it re-enters and a good call clears its strikes.
        hanging.mode = "ok"
        assert wait_for(lambda: replica.healthy, timeout_s=5)
        assert client(running.url).chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=3)
        assert replica.strikes == 0 and replica.quarantines == 2
        assert [c["status"] for c in calls(running.url)] == ["error", "error", "ok"]
        with urllib.request.urlopen(running.url + "/metrics", timeout=10) as response:
            assert "pythia_replica_quarantines_total 2.0" in response.read().decode()
    finally:
        running.server.stop()
        hung.stop()


def test_a_stall_mid_stream_ends_the_stream_with_an_error_and_quarantines(tmp_path: Path) -> None:
    hanging = HangingReplica("mid_stream")
    hung, running = _with(tmp_path, hanging, [], quarantine_base_s=60.0)
    try:
        pieces: list[str] = []
        with pytest.raises(openai.APIError) as caught:
            for chunk in client(running.url).chat.completions.create(model=MODEL, messages=MESSAGES, stream=True):
                pieces.extend(c.delta.content or "" for c in chunk.choices)
        assert pieces == ["Once", " upon"]  # what arrived was relayed, then the error event
        assert "stalled" in str(caught.value)
        (record,) = calls(running.url)
        assert record["status"] == "error" and record["ttft_ms"] is not None
        assert running.gateway.pool is not None and not running.gateway.pool.get("hung").healthy
    finally:
        running.server.stop()
        hung.stop()


def test_a_stall_mid_answer_of_a_whole_call_is_504(tmp_path: Path) -> None:
    hanging = HangingReplica("mid_stream")  # the gateway assembles whole answers from a stream
    hung, running = _with(tmp_path, hanging, [], quarantine_base_s=60.0)
    try:
        with pytest.raises(openai.APIStatusError) as caught:
            client(running.url).chat.completions.create(model=MODEL, messages=MESSAGES)
        assert caught.value.status_code == 504 and caught.value.body["type"] == "upstream_timeout"
        assert [c["status"] for c in calls(running.url)] == ["error"]
        assert running.gateway.pool is not None and running.gateway.pool.get("hung").quarantines == 1
    finally:
        running.server.stop()
        hung.stop()
