"""The radix cache: page-aligned matching, splits, lock protection, eviction order, events."""

from __future__ import annotations

from pythia_server.engine.events import AllBlocksCleared, BlockRemoved, BlockStored
from pythia_server.engine.radix_cache import RadixCache
from pythia_server.tokens import block_hashes


def test_match_after_insert_and_split() -> None:
    cache = RadixCache(page_size=1)
    cache.insert([1, 2, 3, 4, 5])
    assert cache.match_prefix([1, 2, 3, 9]).prefix_len == 3  # splits the node
    assert cache.match_prefix([1, 2, 3, 4, 5, 6]).prefix_len == 5
    existing, _ = cache.insert([1, 2, 3, 7, 8])
    assert existing == 3
    assert cache.total_size == 7
    assert cache.match_prefix([1, 2, 3, 7, 8]).prefix_len == 5
    assert cache.match_prefix([2]).prefix_len == 0


def test_pages_match_and_store_whole_pages_only() -> None:
    cache = RadixCache(page_size=4)
    existing, _ = cache.insert(list(range(10)))  # 8 tokens stored, the 2-token tail is not
    assert existing == 0 and cache.total_size == 8
    assert cache.match_prefix(list(range(10))).prefix_len == 8
    assert cache.match_prefix([0, 1, 2, 3, 4, 5, 99, 7]).prefix_len == 4  # mismatch inside page 2


def test_locked_path_is_not_evicted_and_lru_goes_first() -> None:
    cache = RadixCache(page_size=1)
    cache.insert([1, 1, 1])
    _, locked = cache.insert([2, 2, 2])
    cache.insert([3, 3, 3])
    cache.match_prefix([1, 1, 1])  # touch: [1,1,1] is now more recent than [3,3,3]
    cache.inc_lock_ref(locked)
    assert cache.protected_size == 3 and cache.evictable_size == 6
    assert cache.evict(3) == 3
    assert cache.match_prefix([3, 3, 3]).prefix_len == 0  # least recently used went first
    assert cache.evict(100) == 3  # only the unlocked one can go
    assert cache.match_prefix([2, 2, 2]).prefix_len == 3
    cache.dec_lock_ref(locked)
    assert cache.evictable_size == 3 and cache.evict(100) == 3 and cache.total_size == 0


def test_lock_on_a_leaf_protects_its_ancestors() -> None:
    cache = RadixCache(page_size=1)
    cache.insert([1, 2, 3])
    _, leaf = cache.insert([1, 2, 3, 4, 5])
    cache.inc_lock_ref(leaf)
    assert cache.evict(10) == 0
    assert cache.match_prefix([1, 2, 3, 4, 5]).prefix_len == 5


def test_eviction_cascades_to_parents_that_become_leaves() -> None:
    cache = RadixCache(page_size=1)
    cache.insert([1, 2, 3])
    cache.insert([1, 2, 3, 4, 5])
    assert cache.evict(4) == 5  # the leaf (2 tokens), then its parent (3 tokens)
    assert cache.total_size == 0


def test_lfu_policy_keeps_frequently_hit_prefixes() -> None:
    cache = RadixCache(page_size=1, eviction_policy="lfu")
    cache.insert([1, 1])
    cache.insert([2, 2])
    for _ in range(3):
        cache.match_prefix([1, 1])
    cache.match_prefix([2, 2])  # most recent, but hit less often
    cache.evict(2)
    assert cache.match_prefix([1, 1]).prefix_len == 2
    assert cache.match_prefix([2, 2]).prefix_len == 0


def test_events_carry_the_chained_block_hashes_of_the_prefix() -> None:
    events: list[object] = []
    cache = RadixCache(page_size=2, listener=events.append)
    first = [10, 11, 12, 13, 14, 15]
    second = [10, 11, 12, 13, 20, 21, 22]
    cache.insert(first)
    cache.insert(second)
    stored = [e for e in events if isinstance(e, BlockStored)]
    assert stored[0].block_hashes == block_hashes(first, 2)
    assert stored[0].parent_block_hash is None and stored[0].token_ids == first
    # the second insert stores only the new page, chained on the shared prefix
    assert stored[1].block_hashes == block_hashes(second, 2)[2:]
    assert stored[1].parent_block_hash == block_hashes(first, 2)[1]
    assert stored[1].token_ids == [20, 21] and stored[1].block_size == 2
    cache.evict(100)
    removed = [h for e in events if isinstance(e, BlockRemoved) for h in e.block_hashes]
    assert sorted(removed) == sorted(set(block_hashes(first, 2)) | set(block_hashes(second, 2)))
    cache.reset()
    assert isinstance(events[-1], AllBlocksCleared)


def test_caller_eviction_key_sees_owners_and_can_pin() -> None:
    """The seam for cache-hint policies: owners recorded on nodes, keys per eviction, pins."""
    calls: list[float] = []

    def key(owners: tuple, last_access: int, now_s: float) -> tuple | None:
        calls.append(now_s)
        if "pinned" in owners:
            return None
        return (0 if "cold" in owners else 1, last_access)

    cache = RadixCache(page_size=1, eviction_key=key)
    cache.insert([1, 1, 1], owner="pinned")
    cache.insert([2, 2, 2], owner="warm")
    cache.insert([3, 3, 3], owner="cold")
    cache.match_prefix([2, 2, 2], owner="cold")  # a shared prefix gets both owners
    assert cache.evict(3, now_s=5.0) == 3
    assert cache.match_prefix([3, 3, 3]).prefix_len == 0  # cold only: first to go
    assert cache.evict(100, now_s=6.0) == 3  # the pinned one is skipped like a locked one
    assert cache.match_prefix([1, 1, 1]).prefix_len == 3
    assert calls and set(calls) == {5.0, 6.0}


def test_eviction_order_survives_heavy_churn() -> None:
    """Many touches, locks and evictions: what goes is always the least recently used leaf."""
    import random

    rng = random.Random(3)
    cache = RadixCache(page_size=1)
    keys = [[i, i + 1, i + 2] for i in range(0, 6000, 3)]
    for key in keys:
        cache.insert(key)
    for _ in range(3000):
        cache.match_prefix(rng.choice(keys))  # touches re-key lazily
    for _ in range(500):
        touched = {id(n): n.last_access for n in cache._leaves}
        oldest = min(touched.values())
        before = set(map(id, cache._leaves))
        cache.evict(1)
        gone = before - set(map(id, cache._leaves))
        assert len(gone) == 1 and touched[gone.pop()] == oldest
    assert cache.total_size == (len(keys) - 500) * 3


def test_peek_prefix_len_matches_without_splitting_or_touching() -> None:
    for page in (1, 4):
        cache = RadixCache(page_size=page)
        cache.insert(list(range(12)))
        cache.insert(list(range(8)) + [50, 51, 52, 53])
        nodes_before = _node_count(cache.root)
        access_before = {id(n): n.last_access for n in _nodes(cache.root)}
        for key in (list(range(12)), list(range(6)) + [99] * 6, list(range(8)) + [50, 51, 52, 53, 7], [7, 8], []):
            peeked = cache.peek_prefix_len(key)
            assert _node_count(cache.root) == nodes_before  # no split
            assert {id(n): n.last_access for n in _nodes(cache.root)} == access_before  # no LRU touch
            assert peeked == _match_on_copy(cache, key)


def _nodes(node):  # type: ignore[no-untyped-def]
    yield node
    for child in node.children.values():
        yield from _nodes(child)


def _node_count(node) -> int:  # type: ignore[no-untyped-def]
    return sum(1 for _ in _nodes(node))


def _match_on_copy(cache: RadixCache, key: list[int]) -> int:
    """What match_prefix answers, on a rebuilt copy (match_prefix may split the original)."""
    copy = RadixCache(page_size=cache.page_size)
    stack = [(cache.root, [])]
    while stack:
        node, prefix = stack.pop()
        path = prefix + list(node.key) if node is not cache.root else []
        if not node.children and path:
            copy.insert(path)
        stack.extend((child, path) for child in node.children.values())
    return copy.match_prefix(key).prefix_len


def test_reclaimable_size_is_what_eviction_can_free_past_pins() -> None:
    """Pinned nodes hold their unlocked ancestors too; the count matches an evict-all exactly."""
    import random

    def key(owners: tuple, last_access: int, now_s: float) -> tuple | None:
        return None if any(o.startswith("pin") for o in owners) else (last_access,)

    rng = random.Random(7)
    for trial in range(30):
        cache = RadixCache(page_size=rng.choice([1, 2]), eviction_key=key)
        stems = [[rng.randrange(50) for _ in range(rng.randrange(2, 9))] for _ in range(4)]
        for i in range(25):
            ids = rng.choice(stems) + [rng.randrange(50) for _ in range(rng.randrange(1, 9))]
            owner = "pin" if rng.random() < 0.2 else f"o{i}"
            _, node = cache.insert(ids, owner=owner)
            if rng.random() < 0.15:
                cache.inc_lock_ref(node)
        expected = cache.reclaimable_size(now_s=1.0)
        assert 0 <= expected <= cache.evictable_size
        assert cache.evict(10**9, now_s=1.0) == expected, trial
        assert cache.reclaimable_size(now_s=1.0) == 0
    plain = RadixCache(page_size=1)
    plain.insert([1, 2, 3])
    assert plain.reclaimable_size(0.0) == plain.evictable_size == 3


def test_forced_eviction_takes_unpinned_first_then_pinned_lru() -> None:
    def key(owners: tuple, last_access: int, now_s: float) -> tuple | None:
        return None if "pinned" in owners else (last_access,)

    cache = RadixCache(page_size=1, eviction_key=key)
    cache.insert([1, 1, 1], owner="pinned")
    cache.insert([2, 2, 2], owner="pinned")
    cache.insert([3, 3, 3], owner="free")
    assert cache.evict(4, now_s=0.0) == 3  # pins hold without force
    assert cache.forced_evicted_tokens == 0
    assert cache.evict(1, now_s=0.0, force=True) == 3
    assert cache.forced_evicted_tokens == 3
    assert cache.match_prefix([1, 1, 1]).prefix_len == 0  # the older pinned leaf went
    assert cache.match_prefix([2, 2, 2]).prefix_len == 3


def test_eviction_key_taking_depth_tokens_gets_the_prefix_length_to_the_node_end() -> None:
    """A key with a ``depth_tokens`` keyword tells a shared role prompt from a deep history."""
    depths: list[int] = []

    def key(owners: tuple, last_access: int, now_s: float, *, depth_tokens: int) -> tuple | None:
        depths.append(depth_tokens)
        return (-depth_tokens,)  # deepest first: histories go before the role prompt

    cache = RadixCache(page_size=2, eviction_key=key)
    role = [7] * 4
    cache.insert(role + [1] * 6, owner="s1")  # one node of 10, split at 4 when s2 arrives
    cache.insert(role + [2] * 2, owner="s2")
    cache.match_prefix(role + [1] * 6)  # s1's history is now the most recently used
    assert cache.evict(1, now_s=0.0) == 6  # yet the 10-token-deep leaf goes first
    assert sorted(depths) == [6, 10]
    assert cache.peek_prefix_len(role + [1] * 6) == 4
    assert cache.peek_prefix_len(role + [2] * 2) == 6
    assert cache.evict(1, now_s=0.0) == 2
    assert cache.evict(1, now_s=0.0) == 4  # the role prompt last: a 4-token node at depth 4
    assert depths[-1] == 4 and cache.total_size == 0
    legacy = RadixCache(page_size=1, eviction_key=lambda owners, last_access, now_s: (last_access,))
    legacy.insert([1, 2])
    assert legacy.evict(1) == 2  # a three-argument key is called as before


def test_depth_tokens_survive_splits() -> None:
    cache = RadixCache(page_size=1)
    _, leaf = cache.insert([1, 2, 3, 4, 5])
    _, other = cache.insert([1, 2, 9])
    assert leaf.depth_tokens == 5 and other.depth_tokens == 3
    assert other.parent is not None and other.parent.depth_tokens == 2
    assert cache.match_prefix([1, 2, 3, 4]).last_node.depth_tokens == 4
    assert leaf.depth_tokens == 5 and cache.root.depth_tokens == 0
