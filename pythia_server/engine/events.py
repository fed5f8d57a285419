"""Block-level KV cache events, as SGLang publishes them with ``--kv-events-config``.

The radix cache reports every page it stores or evicts so that a gateway can keep an
exact index of what each replica holds (SGLang: ``python/sglang/srt/mem_cache/
radix_cache.py`` ``_record_store_event`` / ``_record_remove_event``, wire format in
``python/sglang/srt/disaggregation/kv_events.py``). Hashes are
``pythia_server.tokens.block_hashes`` of the page-aligned prefix, page size = block size,
so the gateway computes the same numbers from a prompt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["AllBlocksCleared", "BlockRemoved", "BlockStored", "KvEvent", "KvEventListener"]


@dataclass(frozen=True, slots=True)
class BlockStored:
    """Pages newly held in the cache; ``block_hashes[i]`` covers the prefix up to page i."""

    block_hashes: list[int]
    parent_block_hash: int | None  # hash of the page just before the first one; None at the root
    token_ids: list[int]  # len(token_ids) == len(block_hashes) * block_size
    block_size: int


@dataclass(frozen=True, slots=True)
class BlockRemoved:
    """Pages evicted from the cache."""

    block_hashes: list[int]


@dataclass(frozen=True, slots=True)
class AllBlocksCleared:
    """The whole cache was flushed."""


KvEvent = BlockStored | BlockRemoved | AllBlocksCleared
KvEventListener = Callable[[KvEvent], None]
