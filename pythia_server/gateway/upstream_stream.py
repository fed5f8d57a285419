"""Reading a replica's SSE answer for one call: relayed event by event, or collected whole.

Split from ``gateway/proxy.py``, which decides what a failure means (quarantine, the
error event, the call's record); this module only walks the stream, taking the call's
first-content time (TTFT) and usage on the way, and raises ``UpstreamError`` when the
stream fails.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from pythia_server.errors import UpstreamError
from pythia_server.gateway.accounting import (
    SseSplitter,
    Usage,
    carries_accounting,
    decode_event,
    has_content,
    is_usage_only,
    usage_from_generate,
    usage_from_openai,
)
from pythia_server.gateway.assemble import GenerateAssembler, OpenAIAssembler
from pythia_server.gateway.served_call import ServedCall
from pythia_server.sglang_backend.client import UpstreamResponse

__all__ = ["collect_answer", "read_usage", "relay_events"]


def read_usage(route: str, data: Any, usage: Usage) -> None:
    """Take the token counts of a whole answer (``/generate`` or OpenAI shape) into ``usage``."""
    if route == "generate":
        usage_from_generate(data, usage)
    else:
        usage_from_openai(data, usage)


async def collect_answer(call: ServedCall, upstream: UpstreamResponse) -> dict[str, Any]:
    """The non-streaming answer assembled from the replica's stream; raises on a failed stream."""
    route = call.parsed.route
    assembler = GenerateAssembler() if route == "generate" else OpenAIAssembler(chat=route == "chat")
    splitter = SseSplitter()
    events = 0
    async for chunk in upstream.iter_chunks():
        for raw in splitter.feed(chunk):
            data = decode_event(raw)
            if data is None:
                continue
            if isinstance(data, dict) and isinstance(data.get("error"), dict) and not data.get("choices"):
                message = data["error"].get("message") or "an error event"
                raise UpstreamError(f"the replica's stream failed: {message}")
            if call.first_content is None and has_content(route, data):
                call.first_content = time.perf_counter()
            assembler.feed(data)
            events += 1
    if not events:
        raise UpstreamError("the replica's stream ended without an answer")
    body = assembler.build()
    read_usage(route, body, call.usage)
    return body


async def relay_events(call: ServedCall, upstream: UpstreamResponse) -> AsyncIterator[bytes]:
    """Whole SSE events as they arrive, decoding only those that matter.

    Events are decoded until the first content (TTFT); after that, OpenAI chunks only
    when they carry usage or a finish reason, and for ``/generate`` (whose every chunk
    repeats cumulative ``meta_info``) only the last one, whose usage is taken when the
    stream ends or fails (the ``UpstreamError`` is then re-raised).
    """
    route = call.parsed.route
    splitter = SseSplitter()
    drop_usage = route != "generate" and not call.parsed.client_wants_usage
    last_generate: bytes | None = None
    try:
        async for chunk in upstream.iter_chunks():
            out: list[bytes] = []
            for raw in splitter.feed(chunk):
                if route == "generate":
                    if raw.startswith((b"data: {", b"data:{")):
                        last_generate = raw
                        if call.first_content is None and has_content(route, decode_event(raw)):
                            call.first_content = time.perf_counter()
                elif call.first_content is None or carries_accounting(raw):
                    data = decode_event(raw)
                    if data is not None:
                        if call.first_content is None and has_content(route, data):
                            call.first_content = time.perf_counter()
                        usage_from_openai(data, call.usage)
                        if drop_usage and is_usage_only(data):
                            continue
                out.append(raw)
            if out:
                yield b"".join(out)
        rest = splitter.rest()
        if rest:
            yield rest
    except UpstreamError:
        if last_generate is not None:
            usage_from_generate(decode_event(last_generate), call.usage)
        raise
    if last_generate is not None:
        usage_from_generate(decode_event(last_generate), call.usage)
