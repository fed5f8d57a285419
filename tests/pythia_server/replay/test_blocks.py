from __future__ import annotations

from pythia_server.replay.blocks import (
    HashIdAllocator,
    SharedPrefixes,
    blocks_for,
    extend_prompt,
)


def test_blocks_for_rounds_up() -> None:
    assert [blocks_for(n, 64) for n in (0, 1, 64, 65, 128)] == [0, 1, 1, 2, 2]


def test_extend_prompt_reuses_only_whole_shared_blocks() -> None:
    allocator = HashIdAllocator()
    first = extend_prompt((), 0, 150, 64, allocator)  # 3 blocks, the last partial
    assert first == (1, 2, 3)
    second = extend_prompt(
        first, 150, 300, 64, allocator
    )  # 150 shared tokens = 2 whole blocks
    assert second[:2] == first[:2] and second[2] not in first and len(second) == 5
    shorter = extend_prompt(second, 300, 64, 64, allocator)
    assert shorter == second[:1]


def test_shared_prefixes_grow_consistently() -> None:
    shared = SharedPrefixes(HashIdAllocator(), 64)
    short = shared.blocks("role", 130)
    long = shared.blocks("role", 400)
    assert len(short) == 2 and len(long) == 6 and long[:2] == short
    assert shared.blocks("other", 64) != short[:1]
