"""A recording OpenAI-compatible server on loopback for SDK tests.

Real HTTP (uvicorn + Starlette in a thread). It records every request's path, headers and
JSON body, and answers chat completions, completions and responses, streaming or not,
with canned text (or tool calls) chosen by a replaceable ``responder``. It also accepts
OTLP/HTTP trace posts at ``/v1/traces`` and keeps their raw bodies.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

Responder = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    def tag(self, name: str) -> str | None:
        from pythia_sdk.protocol import HEADER_PREFIX

        return self.headers.get(HEADER_PREFIX + name)


def default_responder(body: dict[str, Any]) -> dict[str, Any]:
    return {"content": "ok, noted."}


@dataclass
class FakeOpenAI:
    """The running server: ``base_url`` for clients, ``requests`` as recorded."""

    port: int
    requests: list[Recorded] = field(default_factory=list)
    traces: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    responder: Responder = default_responder
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Model calls still to be answered 503 (with a 1 ms retry-after), for retry tests.
    fail_next: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def model_calls(self) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.path != "/v1/traces"]

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()
            self.traces.clear()
            self.fail_next = 0
        self.responder = default_responder


_ids = itertools.count(1)


def _usage(body: dict[str, Any], text: str) -> tuple[int, int]:
    prompt = len(json.dumps(body.get("messages") or body.get("prompt") or body.get("input") or ""))
    return prompt // 4 + 1, max(1, len(text.split()))


def _app(server: FakeOpenAI) -> Starlette:
    async def record(request: Request) -> dict[str, Any]:
        raw = await request.body()
        body = json.loads(raw) if raw else {}
        with server.lock:
            server.requests.append(
                Recorded(request.url.path, {k.lower(): v for k, v in request.headers.items()}, body)
            )
        return body

    async def chat(request: Request) -> Response:
        body = await record(request)
        with server.lock:
            failing, server.fail_next = server.fail_next > 0, max(0, server.fail_next - 1)
        if failing:
            return JSONResponse({"error": {"message": "busy", "type": "server_error"}},
                                status_code=503, headers={"retry-after-ms": "1"})
        answer = server.responder(body)
        text = answer.get("content") or ""
        tool_calls = answer.get("tool_calls")
        inp, out = _usage(body, text)
        cid = f"chatcmpl-{next(_ids)}"
        model = body.get("model", "fake")
        finish = "tool_calls" if tool_calls else "stop"
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if tool_calls:
                message["tool_calls"] = tool_calls
            return JSONResponse({
                "id": cid, "object": "chat.completion", "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": inp, "completion_tokens": out,
                          "total_tokens": inp + out},
            })

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def events() -> Any:
            def chunk(delta: dict[str, Any], reason: str | None) -> str:
                return "data: " + json.dumps({
                    "id": cid, "object": "chat.completion.chunk", "created": 0, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": reason}],
                }) + "\n\n"
            yield chunk({"role": "assistant", "content": ""}, None)
            for word in text.split(" ") if text else []:
                yield chunk({"content": word + " "}, None)
                await asyncio.sleep(0)
            if tool_calls:
                calls = [{"index": i, **c} for i, c in enumerate(tool_calls)]
                yield chunk({"tool_calls": calls}, None)
            yield chunk({}, finish)
            if include_usage:
                yield "data: " + json.dumps({
                    "id": cid, "object": "chat.completion.chunk", "created": 0, "model": model,
                    "choices": [], "usage": {"prompt_tokens": inp, "completion_tokens": out,
                                             "total_tokens": inp + out}}) + "\n\n"
            yield "data: [DONE]\n\n"
        return StreamingResponse(events(), media_type="text/event-stream")

    async def completions(request: Request) -> Response:
        body = await record(request)
        text = server.responder(body).get("content") or ""
        inp, out = _usage(body, text)
        payload = {
            "id": f"cmpl-{next(_ids)}", "object": "text_completion", "created": 0,
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out},
        }
        if not body.get("stream"):
            return JSONResponse(payload)

        async def events() -> Any:
            yield "data: " + json.dumps(payload) + "\n\n"
            yield "data: [DONE]\n\n"
        return StreamingResponse(events(), media_type="text/event-stream")

    async def responses(request: Request) -> Response:
        body = await record(request)
        text = server.responder(body).get("content") or ""
        inp, out = _usage(body, text)
        response = {
            "id": f"resp_{next(_ids)}", "object": "response", "created_at": 0,
            "model": body.get("model", "fake"), "status": "completed",
            "output": [{"type": "message", "id": "msg_1", "status": "completed",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": text, "annotations": []}]}],
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "usage": {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out,
                      "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}},
        }
        if not body.get("stream"):
            return JSONResponse(response)

        async def events() -> Any:
            seq = itertools.count()
            created = {**response, "status": "in_progress", "output": [], "usage": None}
            yield _sse("response.created", {"type": "response.created", "response": created,
                                            "sequence_number": next(seq)})
            yield _sse("response.output_item.added", {
                "type": "response.output_item.added", "output_index": 0,
                "item": {"type": "message", "id": "msg_1", "status": "in_progress",
                         "role": "assistant", "content": []}, "sequence_number": next(seq)})
            yield _sse("response.content_part.added", {
                "type": "response.content_part.added", "item_id": "msg_1", "output_index": 0,
                "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []},
                "sequence_number": next(seq)})
            yield _sse("response.output_text.delta", {
                "type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0,
                "content_index": 0, "delta": text, "logprobs": [], "sequence_number": next(seq)})
            yield _sse("response.completed", {"type": "response.completed", "response": response,
                                              "sequence_number": next(seq)})
        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(request: Request) -> Response:
        await record(request)
        return JSONResponse({"object": "list", "data": [
            {"id": "fake", "object": "model", "created": 0, "owned_by": "test"}]})

    async def traces(request: Request) -> Response:
        raw = await request.body()
        with server.lock:
            server.traces.append(({k.lower(): v for k, v in request.headers.items()}, raw))
        return Response(b"", media_type="application/x-protobuf")

    return Starlette(routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/responses", responses, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/traces", traces, methods=["POST"]),
    ])


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerThread:
    """uvicorn serving ``app`` on loopback in a daemon thread until stop()."""

    def __init__(self, app: Any, port: int) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_fake_openai() -> tuple[FakeOpenAI, ServerThread]:
    port = free_port()
    fake = FakeOpenAI(port)
    thread = ServerThread(_app(fake), port)
    thread.start()
    return fake, thread
