"""What a call's responses say about it: tokens, finish reason, first content, SSE framing.

Pure functions over parsed JSON and bytes, shared by the streaming and non-streaming
paths of the proxy. Streams are split into whole SSE events so each can be inspected
(and the usage-only chunk dropped) before it is forwarded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SseSplitter", "Usage", "carries_accounting", "decode_event", "encode_event", "has_content", "is_usage_only",
    "usage_from_generate", "usage_from_openai",
]


@dataclass(slots=True)
class Usage:
    """Token counts and finish reason as the engine reported them (None: not reported)."""

    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    engine_queue_ms: float | None = None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def usage_from_openai(data: Any, into: Usage) -> None:
    """Fill ``into`` from an OpenAI response or stream chunk (chat or completions)."""
    if not isinstance(data, Mapping):
        return
    usage = data.get("usage")
    if isinstance(usage, Mapping):
        into.prompt_tokens = _int(usage.get("prompt_tokens"))
        into.output_tokens = _int(usage.get("completion_tokens"))
        details = usage.get("prompt_tokens_details")
        if isinstance(details, Mapping):
            into.cached_tokens = _int(details.get("cached_tokens"))
    choices = data.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            if isinstance(choice, Mapping) and isinstance(choice.get("finish_reason"), str):
                into.finish_reason = choice["finish_reason"]


def usage_from_generate(data: Any, into: Usage) -> None:
    """Fill ``into`` from SGLang's ``/generate`` output (``meta_info``); the first item of a batch."""
    if isinstance(data, list):
        data = data[0] if data else None
    if not isinstance(data, Mapping):
        return
    meta = data.get("meta_info")
    if not isinstance(meta, Mapping):
        return
    into.prompt_tokens = _int(meta.get("prompt_tokens"))
    into.output_tokens = _int(meta.get("completion_tokens"))
    into.cached_tokens = _int(meta.get("cached_tokens"))
    finish = meta.get("finish_reason")
    if isinstance(finish, Mapping) and isinstance(finish.get("type"), str):
        into.finish_reason = finish["type"]
    elif isinstance(finish, str):
        into.finish_reason = finish
    queue_s = meta.get("queue_time")
    if isinstance(queue_s, (int, float)) and not isinstance(queue_s, bool) and queue_s >= 0:
        into.engine_queue_ms = float(queue_s) * 1000.0


def has_content(route: str, data: Any) -> bool:
    """True when a stream chunk carries generated content (the TTFT moment)."""
    if not isinstance(data, Mapping):
        return False
    if route == "generate":
        meta = data.get("meta_info")
        tokens = meta.get("completion_tokens") if isinstance(meta, Mapping) else None
        return bool(data.get("text")) or bool(isinstance(tokens, int) and tokens > 0)
    choices = data.get("choices")
    if not isinstance(choices, list):
        return False
    for choice in choices:
        if not isinstance(choice, Mapping):
            continue
        if route == "completions":
            if choice.get("text"):
                return True
            continue
        delta = choice.get("delta")
        if isinstance(delta, Mapping) and (delta.get("content") or delta.get("tool_calls")
                                           or delta.get("reasoning_content")):
            return True
    return False


def is_usage_only(data: Any) -> bool:
    """The chunk ``stream_options.include_usage`` adds: usage and no choices."""
    return isinstance(data, Mapping) and not data.get("choices") and isinstance(data.get("usage"), Mapping)


#: An OpenAI stream chunk worth decoding once content has started: usage or a finish
#: reason that is not null. Others (plain deltas) are forwarded without parsing.
_ACCOUNTING_RE = re.compile(rb'"(?:usage|finish_reason)"\s*:\s*[^n\s]')


def carries_accounting(event: bytes) -> bool:
    return _ACCOUNTING_RE.search(event) is not None


class SseSplitter:
    """Cuts a byte stream into whole SSE events (each with its blank-line separator)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """Complete events so far; a partial event waits for the next chunk."""
        self._buffer += chunk.replace(b"\r\n", b"\n") if b"\r" in chunk else chunk
        out: list[bytes] = []
        while True:
            end = self._buffer.find(b"\n\n")
            if end < 0:
                return out
            out.append(self._buffer[: end + 2])
            self._buffer = self._buffer[end + 2:]

    def rest(self) -> bytes:
        """Bytes after the last complete event (a stream that ended mid-event)."""
        rest, self._buffer = self._buffer, b""
        return rest


def decode_event(event: bytes) -> Any:
    """An event's ``data`` as JSON; None for ``[DONE]``, comments and anything not JSON."""
    data = [line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")]
    if not data:
        return None
    payload = b"\n".join(data)
    if payload == b"[DONE]" or not payload.startswith((b"{", b"[")):
        return None
    try:
        return json.loads(payload)
    except ValueError:
        return None


def encode_event(data: Any) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"
