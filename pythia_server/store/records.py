"""What the store keeps: one record per LLM call and one per session. Never prompt text."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["CallRecord", "SessionRecord", "pack_hashes", "unpack_hashes"]


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One LLM call as the gateway saw it. Times are Unix seconds; durations in ms."""

    call_id: str
    workflow: str | None
    session: str | None
    agent: str | None
    parent: str | None
    call_tag: str | None  # the client's own logical call id
    model: str | None
    replica: str | None
    route: str  # "chat", "completions" or "generate"
    stream: bool
    prompt_tokens: int | None
    cached_tokens: int | None
    output_tokens: int | None
    queue_ms: float | None
    ttft_ms: float | None
    e2e_ms: float | None
    finish_reason: str | None
    status: str  # "ok", "error" or "aborted"
    error: str | None
    started_at: float
    finished_at: float
    block_size: int
    block_hashes: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One run of a workflow. ``jct_s`` is the last call's end minus the first call's start."""

    workflow: str
    session: str
    first_call_at: float
    last_call_at: float
    ended_at: float | None
    jct_s: float
    calls: int


def pack_hashes(hashes: Sequence[int]) -> bytes:
    """Block hashes as a compact blob: unsigned 64-bit little-endian, 8 bytes each."""
    return struct.pack(f"<{len(hashes)}Q", *(h & 0xFFFF_FFFF_FFFF_FFFF for h in hashes))


def unpack_hashes(blob: bytes | None) -> tuple[int, ...]:
    if not blob:
        return ()
    return struct.unpack(f"<{len(blob) // 8}Q", blob)
