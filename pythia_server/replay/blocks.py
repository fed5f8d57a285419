"""Hash-id bookkeeping shared by converters and generators.

A workload states prefix sharing only through ``hash_ids``: two calls share their first
``k`` blocks exactly when their first ``k`` ids are equal. The rule every converter and
generator follows: a prefix of ``T`` shared tokens shares ``T // block_size`` whole
blocks; everything after it (including a partial block) gets fresh ids.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

__all__ = ["HashIdAllocator", "SharedPrefixes", "blocks_for", "extend_prompt"]


def blocks_for(tokens: int, block_size: int) -> int:
    """Hash ids needed to cover ``tokens`` (the last block may be partial)."""
    return math.ceil(tokens / block_size) if tokens > 0 else 0


class HashIdAllocator:
    """Hands out fresh ids, counting up; one per workload so ids never collide."""

    def __init__(self, first_id: int = 1) -> None:
        self._next = first_id

    def fresh(self, count: int) -> tuple[int, ...]:
        if count <= 0:
            return ()
        start = self._next
        self._next += count
        return tuple(range(start, start + count))


class SharedPrefixes:
    """Named token prefixes (a role's system prompt, tool schemas) shared across sessions.

    ``blocks(key, tokens)`` returns the whole blocks of the first ``tokens`` tokens of the
    prefix called ``key``; asking for more later extends the same sequence, so a shorter
    use is always a prefix of a longer one.
    """

    def __init__(self, allocator: HashIdAllocator, block_size: int) -> None:
        self._allocator = allocator
        self._block_size = block_size
        self._ids: dict[Hashable, tuple[int, ...]] = {}

    def blocks(self, key: Hashable, tokens: int) -> tuple[int, ...]:
        wanted = max(0, tokens) // self._block_size
        have = self._ids.get(key, ())
        if len(have) < wanted:
            have = have + self._allocator.fresh(wanted - len(have))
            self._ids[key] = have
        return have[:wanted]


def extend_prompt(
    prefix_ids: Sequence[int],
    shared_tokens: int,
    input_length: int,
    block_size: int,
    allocator: HashIdAllocator,
) -> tuple[int, ...]:
    """Ids for a prompt of ``input_length`` tokens whose first ``shared_tokens`` tokens equal
    the prompt that ``prefix_ids`` describes (only whole shared blocks are reused)."""
    total = blocks_for(input_length, block_size)
    shared = min(len(prefix_ids), max(0, shared_tokens) // block_size, total)
    return tuple(prefix_ids[:shared]) + allocator.fresh(total - shared)
