"""Streaming for the simulated server: SSE chunk shapes, and freeing the engine when a client leaves.

Split from ``sim_server.py`` (the routes): the native ``/generate`` and OpenAI chunk
streams, and the response class that notices a disconnect while a request is still
queued. Every stream aborts its engine request if it stops before the request finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from pythia_server.engine.live import RequestStream
from pythia_server.engine.types import FinishedRequest
from pythia_server.sglang_backend import sim_schema as schema
from pythia_server.sglang_backend.sim_schema import ParsedRequest, error_body

__all__ = ["SSEResponse", "generate_events", "openai_events", "sse", "wait_for_disconnect"]


class SSEResponse(StreamingResponse):
    """Streams until done or until the client goes away, whichever is first.

    Starlette only notices a disconnect when a write fails; waiting on ``receive`` as
    well frees a request that is still queued. Cancelling the producer raises inside
    the body generator, whose ``finally`` aborts the engine request.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def produce() -> None:
            with contextlib.suppress(OSError):
                await self.stream_response(send)

        producer = asyncio.ensure_future(produce())
        listener = asyncio.ensure_future(self.listen_for_disconnect(receive))
        _, pending = await asyncio.wait({producer, listener}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
        aclose = getattr(self.body_iterator, "aclose", None)
        if aclose is not None:
            await aclose()


def sse(payload: Any) -> str:
    """One SSE ``data:`` event with compact JSON."""
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


async def wait_for_disconnect(request: Request) -> None:
    """Return once the client has gone away (its ``http.disconnect`` message)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def generate_events(
    stream: RequestStream, rid: str, prompt_tokens: int, start: float, abort: Callable[[str], object]
) -> AsyncIterator[str]:
    """``/generate`` chunks: cumulative text and ids; aborts the request if the stream stops early."""
    text, ids = "", []
    try:
        async for event in stream:
            if event.delta is not None:
                text += event.delta.text
                ids.extend(event.delta.token_ids)
            end = event.finished
            cached = end.cached_tokens if end else event.delta.cached_tokens if event.delta else 0
            meta = schema.meta_info(rid, end, prompt_tokens, len(ids), cached, time.monotonic() - start)
            yield sse({"text": text, "output_ids": list(ids), "meta_info": meta})
        yield "data: [DONE]\n\n"
    finally:
        if stream.finished is None:
            abort(rid)


async def openai_events(
    stream: RequestStream, parsed: ParsedRequest, created: int, chat: bool, abort: Callable[[str], object]
) -> AsyncIterator[str]:
    """OpenAI chunks (chat or text completion), usage last if asked; aborts the request if the stream stops early."""
    kind = "chat.completion.chunk" if chat else "text_completion"
    rid = parsed.request.rid

    def chunk(piece: str | None, reason: str | None = None, matched: Any = None, role: bool = False) -> str:
        if chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if piece is not None:
                delta["content"] = piece
            choice: dict[str, Any] = {"index": 0, "delta": delta}
        else:
            choice = {"index": 0, "text": piece or ""}
        choice.update({"logprobs": None, "finish_reason": reason, "matched_stop": matched})
        return sse({"id": rid, "object": kind, "created": created, "model": parsed.model,
                    "choices": [choice], "usage": None})

    try:
        if chat:
            yield chunk(None, role=True)
        async for event in stream:
            end = event.finished
            if end is not None and end.finish_reason.get("type") == "abort":
                yield sse(error_body("the request was aborted", status=503, kind="aborted"))
                break
            reason, matched = schema.openai_finish_reason(end) if end else (None, None)
            if event.delta is not None or end is not None:
                yield chunk(event.delta.text if event.delta else None, reason, matched)
            if end is not None and parsed.include_usage:
                yield _usage_chunk(kind, parsed, created, end)
        yield "data: [DONE]\n\n"
    finally:
        if stream.finished is None:
            abort(rid)


def _usage_chunk(kind: str, parsed: ParsedRequest, created: int, finished: FinishedRequest) -> str:
    return sse({"id": parsed.request.rid, "object": kind, "created": created, "model": parsed.model,
                "choices": [], "usage": schema.usage(finished)})
