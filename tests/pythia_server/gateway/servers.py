"""Test helpers: run ASGI apps with uvicorn on loopback in a thread; a small fake SGLang server.

The fake speaks the slice of SGLang's HTTP API the gateway uses (OpenAI routes with
``rid`` and usage including ``prompt_tokens_details.cached_tokens``, ``/generate``,
``/health``, ``/v1/models``, ``/abort_request``), caches prompts by exact token prefix
and remembers which requests were aborted or cut off, so tests can check the gateway's
behaviour without depending on the simulated engine's timing.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from pythia_server.tokens import apply_chat_template, synthetic_text, tokenize


class ServerThread:
    """uvicorn serving ``app`` on 127.0.0.1 (a free port) in a daemon thread."""

    def __init__(self, app: Any, port: int = 0) -> None:
        self.config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                     lifespan="on", loop="asyncio")
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.port = 0

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


_HELD: list[socket.socket] = []


def closed_port() -> int:
    """A port that refuses connections for the rest of the test run.

    It stays bound (never listening), so no server started later can be handed the
    same port by the OS and make a "dead" replica answer.
    """
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _HELD.append(s)
    return s.getsockname()[1]


class FakeSGLang:
    """State of one fake replica, readable by tests."""

    def __init__(self, model: str = "fake-model", token_delay_s: float = 0.0,
                 output_tokens: int = 8, die_after_chunks: int | None = None) -> None:
        self.model = model
        self.die_after_chunks = die_after_chunks
        self.token_delay_s = token_delay_s
        self.output_tokens = output_tokens
        self.prompts: list[list[int]] = []
        self.requests: list[dict[str, Any]] = []
        self.live: set[str] = set()
        self.aborted: set[str] = set()
        self.cut_off: set[str] = set()
        self.app = Starlette(routes=[
            Route("/health", self._health), Route("/v1/models", self._models),
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/completions", self._completions, methods=["POST"]),
            Route("/generate", self._generate, methods=["POST"]),
            Route("/abort_request", self._abort, methods=["POST"]),
            Route("/flush_cache", self._flush, methods=["POST"]),
            Route("/v1/loads", self._loads),
        ])

    def _cached(self, ids: list[int]) -> int:
        best = 0
        for seen in self.prompts:
            n = 0
            for a, b in zip(seen, ids):
                if a != b:
                    break
                n += 1
            best = max(best, n)
        self.prompts.append(ids)
        return best

    async def _health(self, request: Request) -> Response:
        return Response(b"")

    async def _models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    async def _loads(self, request: Request) -> Response:
        return JSONResponse({"loads": [{"dp_rank": 0, "num_running_reqs": len(self.live)}]})

    async def _flush(self, request: Request) -> Response:
        self.prompts.clear()
        return Response(b"")

    async def _abort(self, request: Request) -> Response:
        body = await request.json()
        self.aborted.add(body.get("rid"))
        return Response(b"")

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        return await self._openai(body, tokenize(apply_chat_template(body["messages"])), chat=True)

    async def _completions(self, request: Request) -> Response:
        body = await request.json()
        prompt = body["prompt"]
        return await self._openai(body, prompt if isinstance(prompt, list) else tokenize(prompt), chat=False)

    async def _openai(self, body: dict[str, Any], ids: list[int], *, chat: bool) -> Response:
        self.requests.append(body)
        rid = body.get("rid") or "none"
        cached = self._cached(ids)
        n = min(body.get("max_tokens") or self.output_tokens, self.output_tokens)
        pieces = synthetic_text(n, len(ids))
        usage = {"prompt_tokens": len(ids), "completion_tokens": n, "total_tokens": len(ids) + n,
                 "prompt_tokens_details": {"cached_tokens": cached}}
        kind = "chat.completion" if chat else "text_completion"
        if not body.get("stream"):
            choice: dict[str, Any] = {"index": 0, "finish_reason": "length"}
            if chat:
                choice["message"] = {"role": "assistant", "content": "".join(pieces)}
            else:
                choice["text"] = "".join(pieces)
            return JSONResponse({"id": rid, "object": kind, "created": 0, "model": self.model,
                                 "choices": [choice], "usage": usage})
        include_usage = (body.get("stream_options") or {}).get("include_usage")

        async def events() -> AsyncIterator[bytes]:
            self.live.add(rid)
            finished = False
            try:
                for i, piece in enumerate(pieces):
                    if self.die_after_chunks is not None and i == self.die_after_chunks:
                        raise RuntimeError("fake replica dies mid-stream")
                    if self.token_delay_s:
                        await asyncio.sleep(self.token_delay_s)
                    last = i == n - 1
                    if chat:
                        choice = {"index": 0, "delta": {"content": piece}, "finish_reason": "length" if last else None}
                    else:
                        choice = {"index": 0, "text": piece, "finish_reason": "length" if last else None}
                    chunk = {"id": rid, "object": kind + ".chunk", "created": 0, "model": self.model,
                             "choices": [choice], "usage": None}
                    yield f"data: {json.dumps(chunk)}\n\n".encode()
                if include_usage:
                    chunk = {"id": rid, "object": kind + ".chunk", "created": 0, "model": self.model,
                             "choices": [], "usage": usage}
                    yield f"data: {json.dumps(chunk)}\n\n".encode()
                yield b"data: [DONE]\n\n"
                finished = True
            finally:
                self.live.discard(rid)
                if not finished:
                    self.cut_off.add(rid)

        return StreamingResponse(events(), media_type="text/event-stream")

    async def _generate(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        ids = body.get("input_ids") or tokenize(body.get("text") or "")
        cached = self._cached(ids)
        n = min((body.get("sampling_params") or {}).get("max_new_tokens") or self.output_tokens, self.output_tokens)
        pieces = synthetic_text(n, len(ids))

        def meta(k: int) -> dict[str, Any]:
            return {"id": body.get("rid"), "prompt_tokens": len(ids), "completion_tokens": k,
                    "cached_tokens": cached, "finish_reason": {"type": "length", "length": n} if k == n else None}

        if not body.get("stream"):
            return JSONResponse({"text": "".join(pieces), "meta_info": meta(n)})

        async def events() -> AsyncIterator[bytes]:
            for k in range(1, n + 1):
                yield f"data: {json.dumps({'text': ''.join(pieces[:k]), 'meta_info': meta(k)})}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")


def garbage_app() -> Starlette:
    """A replica that is up but answers nonsense (200 with a non-JSON body)."""

    async def ok(request: Request) -> Response:
        return Response(b"")

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    async def nonsense(request: Request) -> Response:
        return Response(b"<html>not json</html>", media_type="text/html")

    return Starlette(routes=[Route("/health", ok), Route("/v1/models", models),
                             Route("/v1/chat/completions", nonsense, methods=["POST"])])
