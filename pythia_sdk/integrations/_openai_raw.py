"""``with_streaming_response``: the body is the caller's to read, so the call's span ends
when the body ends, with the usage read from the bytes as they pass.

The caller may read the body any way openai offers (``parse()``, ``read()``, ``text()``,
``json()``, ``iter_bytes()``, ``iter_lines()``): all of them pull from the HTTP response's
byte stream, which we wrap. The bytes are kept (up to :data:`KEEP_BYTES`, the tail beyond
that) and looked at once, when the stream closes: a JSON body is parsed whole; an SSE body
(``stream=True``) has its last ``data:`` events parsed (the chunk with ``usage`` when
``stream_options.include_usage`` was set; ``response.completed`` for responses).
A body never read ends the span when the response is closed or collected, without usage.
"""

from __future__ import annotations

import json
import sys
import weakref
import zlib
from collections import deque
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

from pythia_sdk.integrations._openai_calls import ModelCall

#: Bytes of body kept for reading the usage (a longer SSE body keeps its tail).
KEEP_BYTES = 1 << 20
_LAST_EVENTS = 4  # SSE data events looked at, from the end


def observe_raw(response: Any, call: ModelCall) -> None:
    """End ``call`` when ``response``'s body ends (or the response is collected)."""
    call.raw_response = True
    http_response = response.http_response
    tap = _Tap(call, http_response.headers)
    httpx_module = sys.modules[type(http_response).__module__.split(".")[0]]
    if isinstance(http_response.stream, httpx_module.AsyncByteStream):
        http_response.stream = _make_async(httpx_module.AsyncByteStream, http_response.stream, tap)
    else:
        http_response.stream = _make_sync(httpx_module.SyncByteStream, http_response.stream, tap)
    weakref.finalize(response, call.end, "collected")


class _Tap:
    """Keeps the body's bytes and, at the end, reads the usage out of them."""

    def __init__(self, call: ModelCall, headers: Any) -> None:
        self.call = call
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.truncated = False
        self.sse = "text/event-stream" in headers.get("content-type", "")
        self.encoding = headers.get("content-encoding", "").lower()

    def feed(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.size += len(chunk)
        while self.size > KEEP_BYTES and len(self.chunks) > 1:
            self.size -= len(self.chunks.popleft())
            self.truncated = True

    def end(self, how: str) -> None:
        call = self.call
        if call.ended:
            return
        body = b"".join(self.chunks)
        if how == "closed" and self.sse and body.rstrip().endswith(b"data: [DONE]"):
            how = "exhausted"  # openai closes a stream once it has read [DONE] (2.x async)
        if how == "exhausted":
            try:
                self._read_usage(body)
            except Exception:  # a body we cannot read: the span goes without usage
                pass
        self.chunks.clear()
        call.end(how)

    def _read_usage(self, body: bytes) -> None:
        if self.encoding in ("gzip", "deflate") and not self.truncated:
            body = zlib.decompress(body, 47)  # gzip or zlib header, detected
        elif self.encoding not in ("", "identity"):
            return
        if not self.sse:
            if not self.truncated:
                self._take(json.loads(body))
            return
        events = [line[5:].strip() for line in body.splitlines() if line.startswith(b"data:")]
        for data in reversed(events[-_LAST_EVENTS:]):
            if data == b"[DONE]":
                continue
            event = json.loads(data)
            if event.get("type") == "response.completed":
                event = event.get("response") or {}
            if event.get("usage"):
                self._take(event)
                return

    def _take(self, payload: Any) -> None:
        if not isinstance(payload, dict):
            return
        call = self.call
        usage = payload.get("usage")
        if isinstance(usage, dict):
            call.usage = SimpleNamespace(**usage)
        call.response_model = call.response_model or payload.get("model")
        call.response_id = call.response_id or payload.get("id")
        if not call.finish_reasons:
            for choice in payload.get("choices") or ():
                if isinstance(choice, dict) and choice.get("finish_reason"):
                    call.add_finish_reason(choice["finish_reason"])


def _make_sync(base: type, inner: Any, tap: _Tap) -> Any:
    class TappedStream(base):  # type: ignore[misc, valid-type]
        def __iter__(self) -> Iterator[bytes]:
            for chunk in inner:
                tap.feed(chunk)
                yield chunk
            tap.end("exhausted")

        def close(self) -> None:
            try:
                inner.close()
            finally:
                tap.end("closed")

    return TappedStream()


def _make_async(base: type, inner: Any, tap: _Tap) -> Any:
    class TappedStream(base):  # type: ignore[misc, valid-type]
        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for chunk in inner:
                tap.feed(chunk)
                yield chunk
            tap.end("exhausted")

        async def aclose(self) -> None:
            try:
                await inner.aclose()
            finally:
                tap.end("closed")

    return TappedStream()
