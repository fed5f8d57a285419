"""A token-level radix prefix cache with pages, lock refs and policy-ordered eviction.

Mirrors SGLang's ``python/sglang/srt/mem_cache/radix_cache.py``: keys are token ids,
matched and stored in whole pages (``page_size``); a node's first page keys it in its
parent; a match that ends inside a node splits it; running requests hold a lock ref on
their last node, which protects the whole path to the root; eviction removes unlocked
leaves in the order of ``mem_cache/evict_policy.py`` (lru, lfu, priority), and a parent
whose last child went becomes a candidate in turn. The cache does no memory accounting
beyond its own sizes: the engine decides when to evict.

Access "time" is a counter, not a clock: LRU only needs an order.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from pythia_server.engine.events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KvEventListener,
)
from pythia_server.engine.evict_policy import (
    EVICTION_POLICIES,
    EvictionKey,
    pinned_tokens,
    wants_depth,
)
from pythia_server.engine.radix_node import TreeNode, add_owner
from pythia_server.tokens import block_hashes

__all__ = ["EVICTION_POLICIES", "EvictionKey", "MatchResult", "RadixCache", "TreeNode"]


@dataclass(frozen=True, slots=True)
class MatchResult:
    prefix_len: int  # tokens of the key found in the cache (a multiple of page_size)
    last_node: TreeNode  # lock this while the prefix is in use


class RadixCache:
    """Prefix tree of cached token pages; sizes are in tokens."""

    def __init__(
        self,
        page_size: int = 1,
        eviction_policy: str = "lru",
        listener: KvEventListener | None = None,
        eviction_key: EvictionKey | None = None,
    ) -> None:
        if page_size <= 0:
            raise ValueError("page_size must be positive")
        if eviction_policy not in EVICTION_POLICIES:
            raise ValueError(f"unknown eviction policy {eviction_policy!r}; choose from {sorted(EVICTION_POLICIES)}")
        self.page_size = page_size
        self._sort_key = EVICTION_POLICIES[eviction_policy]
        self._listener = listener
        self.eviction_key = eviction_key
        self._key_wants_depth = eviction_key is not None and wants_depth(eviction_key)
        self.forced_evicted_tokens = 0  # pinned tokens evicted because the engine had to (``force``)
        self._tick = 0
        self.root = TreeNode([], None)
        self.root.lock_ref = 1  # the root is never evicted
        self.evictable_size = 0
        self.protected_size = 0
        self._leaves: set[TreeNode] = set()  # unlocked nodes without children
        self._heap: list[tuple[tuple[int, ...], int, TreeNode]] = []  # eviction candidates, lazily deleted
        self._sessions: dict[str, list[TreeNode]] = {}
        self._pushes = 0

    # ----------------------------------------------------------------- queries
    @property
    def total_size(self) -> int:
        return self.evictable_size + self.protected_size

    def match_prefix(self, key: Sequence[int], length: int | None = None, owner: Hashable | None = None) -> MatchResult:
        """Longest cached page-aligned prefix of ``key[:length]``; touches the path (LRU, LFU)."""
        self._tick += 1
        node = self.root
        matched = 0
        end = (len(key) if length is None else min(length, len(key))) // self.page_size * self.page_size
        single = self.page_size == 1
        tick = self._tick
        while matched < end:
            child = node.children.get(key[matched] if single else self._child_key(key, matched))
            if child is None:
                break
            child.hit_count += 1
            child.last_access = tick
            if owner is not None:
                add_owner(child, owner)
            node_key = child.key
            length = len(node_key)
            if end - matched < length or key[matched : matched + length] != node_key:
                length = self._match_len(node_key, key, matched, end)
            if length < len(child.key):
                node = self._split(child, length)
                matched += length
                break
            matched += length
            node = child
        return MatchResult(matched, node)

    def peek_prefix_len(self, key: Sequence[int]) -> int:
        """Longest cached page-aligned prefix of ``key``, read-only: no LRU touch, no split.

        What a KV-event index would answer for a prompt (a router's view), so asking it
        never changes what the engine does next.
        """
        page = self.page_size
        end = len(key) // page * page
        node, matched = self.root, 0
        while matched < end:
            child = node.children.get(key[matched] if page == 1 else self._child_key(key, matched))
            if child is None:
                break
            node_key = child.key
            n = len(node_key)
            if matched + n <= end and key[matched : matched + n] == node_key:
                matched += n
                node = child
                continue
            return matched + self._match_len(node_key, key, matched, end)
        return matched

    # ----------------------------------------------------------------- updates
    def insert(
        self,
        key: Sequence[int],
        priority: int = 0,
        start: TreeNode | None = None,
        start_len: int = 0,
        length: int | None = None,
        owner: Hashable | None = None,
    ) -> tuple[int, TreeNode]:
        """Store the page-aligned part of ``key[:length]``; returns (tokens already cached, last node).

        ``start`` / ``start_len``: a node already known to hold ``key[:start_len]`` (a
        running request's locked node), so only the rest is walked.
        """
        self._tick += 1
        node = start if start is not None else self.root
        matched = start_len if start is not None else 0
        end = (len(key) if length is None else min(length, len(key))) // self.page_size * self.page_size
        while matched < end:
            child = node.children.get(self._child_key(key, matched))
            if child is None:
                break
            child.last_access = self._tick
            child.priority = max(child.priority, priority)
            if owner is not None:
                add_owner(child, owner)
            length = self._match_len(child.key, key, matched, end)
            if length < len(child.key):
                child = self._split(child, length)
                matched += length
                node = child
                break
            matched += length
            node = child
        existing = matched
        if matched < end:
            leaf = TreeNode(key[matched:end] if isinstance(key, list) else list(key[matched:end]), node)
            leaf.last_access = self._tick
            leaf.priority = priority
            if owner is not None:
                leaf.owners = (owner,)
            self._leaves.discard(node)
            node.children[self._child_key(leaf.key, 0)] = leaf
            self.evictable_size += len(leaf.key)
            self._add_leaf(leaf)
            if self._listener is not None:
                parent_hash = node.hashes[-1] if node.hashes else None
                leaf.hashes = block_hashes(leaf.key, self.page_size, parent_hash)
                self._listener(BlockStored(list(leaf.hashes), parent_hash, list(leaf.key), self.page_size))
            node = leaf
        return existing, node

    def inc_lock_ref(self, node: TreeNode) -> None:
        root, leaves, moved = self.root, self._leaves, 0
        while node is not root:
            if node.lock_ref == 0:
                moved += len(node.key)
                leaves.discard(node)
            node.lock_ref += 1
            node = node.parent  # type: ignore[assignment]
        self.evictable_size -= moved
        self.protected_size += moved

    def dec_lock_ref(self, node: TreeNode) -> None:
        root, moved = self.root, 0
        while node is not root:
            if node.lock_ref <= 0:
                raise RuntimeError("lock ref underflow")
            node.lock_ref -= 1
            if node.lock_ref == 0:
                moved += len(node.key)
                if not node.children:
                    self._add_leaf(node)
            node = node.parent  # type: ignore[assignment]
        self.evictable_size += moved
        self.protected_size -= moved

    def move_lock(self, old: TreeNode, new: TreeNode) -> None:
        """``inc_lock_ref(new)`` then ``dec_lock_ref(old)``, walking only the part that changes."""
        node = new
        while node is not old and node is not self.root:
            if node.lock_ref == 0:
                self.evictable_size -= len(node.key)
                self.protected_size += len(node.key)
                self._leaves.discard(node)
            node.lock_ref += 1
            node = node.parent  # type: ignore[assignment]
        if node is not old:  # ``old`` was not an ancestor of ``new``: undo nothing, release it fully
            self.dec_lock_ref(old)

    def evict(self, num_tokens: int, now_s: float = 0.0, force: bool = False) -> int:
        """Remove unlocked leaves in policy order until ``num_tokens`` are freed; returns freed.

        Candidates live in a heap pushed when a node becomes an unlocked leaf, keyed by the
        policy's sort key as it was then. Keys only grow (access time, hit count, inserted
        priority), so a popped entry whose node's key has grown is pushed back with the
        new key, and the first entry popped with an up-to-date key is the true minimum
        (SGLang rebuilds the heap from all leaves per call; same order, less work). With
        a caller's ``eviction_key`` (keys that change with time) the heap is rebuilt per
        call as SGLang does, and pinned leaves are skipped unless ``force``: then they go
        after every unpinned one, least recently used first (the engine's last resort when
        nothing else could ever free memory; ``forced_evicted_tokens`` counts them).
        """
        if num_tokens <= 0 or not self._leaves:
            return 0
        if self.eviction_key is not None:
            return self._evict_by_hint(num_tokens, now_s, force)
        sort_key = self._sort_key
        heap = self._heap
        freed = 0
        removed: list[int] = []
        while freed < num_tokens and heap:
            key, _, node = heapq.heappop(heap)
            if node not in self._leaves:
                continue  # locked, grew a child or already gone since it was pushed
            current = sort_key(node)
            if key != current:
                self._pushes += 1
                heapq.heappush(heap, (current, self._pushes, node))
                continue
            freed += self._remove_leaf(node, removed)
        if self._listener is not None and removed:
            self._listener(BlockRemoved(removed))
        return freed

    def hint_key(self, node: TreeNode, now_s: float) -> tuple | None:
        """The caller's eviction key of ``node`` at ``now_s`` (None: pinned)."""
        assert self.eviction_key is not None
        if self._key_wants_depth:
            return self.eviction_key(node.owners, node.last_access, now_s, depth_tokens=node.depth_tokens)
        return self.eviction_key(node.owners, node.last_access, now_s)

    def _hint_entry(self, node: TreeNode, now_s: float, force: bool) -> tuple | None:
        key = self.hint_key(node, now_s)
        if key is not None:
            return ((0, key), id(node), node)
        return ((1, node.last_access), id(node), node) if force else None

    def _evict_by_hint(self, num_tokens: int, now_s: float, force: bool) -> int:
        heap = [e for e in (self._hint_entry(n, now_s, force) for n in self._leaves) if e is not None]
        heapq.heapify(heap)
        freed = 0
        removed: list[int] = []
        while freed < num_tokens and heap:
            (pinned, _), _, node = heapq.heappop(heap)
            parent = node.parent
            size = self._remove_leaf(node, removed)
            freed += size
            if pinned:
                self.forced_evicted_tokens += size
            if parent is not None and parent in self._leaves:
                entry = self._hint_entry(parent, now_s, force)
                if entry is not None:
                    heapq.heappush(heap, entry)
        if self._listener is not None and removed:
            self._listener(BlockRemoved(removed))
        return freed

    def can_reclaim(self, num_tokens: int, now_s: float) -> bool:
        """Whether ``evict`` could free ``num_tokens`` at ``now_s``, asking as few keys as it can.

        Unpinned leaves are a lower bound, usually plenty when the cache is full; only
        when they fall short is the exact ``reclaimable_size`` walked.
        """
        if num_tokens <= 0:
            return True
        if num_tokens > self.evictable_size:
            return False
        if self.eviction_key is None:
            return True
        found = 0
        for leaf in self._leaves:
            if self.hint_key(leaf, now_s) is not None:
                found += len(leaf.key)
                if found >= num_tokens:
                    return True
        return self.reclaimable_size(now_s) >= num_tokens

    def reclaimable_size(self, now_s: float) -> int:
        """Tokens ``evict`` could free at ``now_s``: ``evictable_size`` less what pins hold.

        Without a caller's eviction key every unlocked token can go. With one, a pinned
        node is as good as locked, and so is every unlocked ancestor of it (a parent is
        only evicted once its last child has gone). Walks the unlocked part of the tree
        and asks the key once per node there, so callers ask only when free KV is short.
        """
        if self.eviction_key is None or self.evictable_size == 0:
            return self.evictable_size
        return self.evictable_size - pinned_tokens(self._leaves, self.root, lambda n: self.hint_key(n, now_s) is None)

    def _remove_leaf(self, node: TreeNode, removed: list[int]) -> int:
        """Drop one unlocked leaf; its parent may become a candidate. Returns tokens freed."""
        parent = node.parent
        assert parent is not None
        key = node.key
        del parent.children[key[0] if self.page_size == 1 else self._child_key(key, 0)]
        self._leaves.discard(node)
        self.evictable_size -= len(node.key)
        removed.extend(node.hashes)
        if parent is not self.root and not parent.children and parent.lock_ref == 0:
            self._add_leaf(parent)
        return len(node.key)

    def add_session_ref(self, session_id: str, node: TreeNode) -> None:
        """``node`` holds KV a session will reuse: evict it only after unreferenced leaves.

        SGLang 0.5.17+ ``--enable-session-radix-cache``
        (``mem_cache/unified_cache/session_ref_tracker.py``): eviction consumes
        unreferenced entries before referenced ones; closing the session dereferences.
        """
        if node is self.root:
            return
        node.session_refs += 1  # the key only grows: lazy re-keying in evict handles it
        self._sessions.setdefault(session_id, []).append(node)

    def close_session(self, session_id: str) -> bool:
        """Drop a session's references (its KV stays cached, evictable as usual)."""
        nodes = self._sessions.pop(session_id, None)
        if nodes is None:
            return False
        for node in nodes:
            node.session_refs -= 1
            if node.session_refs == 0 and node in self._leaves:
                self._push(node)  # its key shrank: a fresh entry puts it back in order
        return True

    def reset(self) -> None:
        """Drop everything (SGLang's flush_cache); callers ensure nothing is locked."""
        self.root = TreeNode([], None)
        self.root.lock_ref = 1
        self.evictable_size = 0
        self.protected_size = 0
        self._leaves.clear()
        self._heap.clear()
        self._sessions.clear()
        if self._listener is not None:
            self._listener(AllBlocksCleared())

    # ----------------------------------------------------------------- helpers
    def _add_leaf(self, node: TreeNode) -> None:
        self._leaves.add(node)
        self._push(node)

    def _push(self, node: TreeNode) -> None:
        self._pushes += 1
        heapq.heappush(self._heap, (self._sort_key(node), self._pushes, node))
        if len(self._heap) > 4 * len(self._leaves) + 1024:  # drop stale entries, in place (evict holds it)
            sort_key = self._sort_key
            self._heap[:] = [(sort_key(n), i, n) for i, n in enumerate(self._leaves)]
            heapq.heapify(self._heap)

    def _child_key(self, key: Sequence[int], start: int) -> object:
        if self.page_size == 1:
            return key[start]
        return tuple(key[start : start + self.page_size])

    def _match_len(self, node_key: list[int], key: Sequence[int], start: int, end: int) -> int:
        """Page-aligned length of the common prefix of ``node_key`` and ``key[start:end]``."""
        n = min(len(node_key), end - start)
        segment = key[start : start + n]
        if (node_key if n == len(node_key) else node_key[:n]) == segment:
            return n
        lo, hi = 0, n  # first mismatch lies in [lo, hi): binary search on C-speed slices
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if node_key[lo:mid] == segment[lo:mid]:
                lo = mid
            else:
                hi = mid
        return lo // self.page_size * self.page_size

    def _split(self, child: TreeNode, length: int) -> TreeNode:
        """Cut ``child`` after ``length`` tokens; returns the new upper node."""
        parent = child.parent
        assert parent is not None
        upper = TreeNode(child.key[:length], parent)
        upper.lock_ref = child.lock_ref
        upper.last_access = child.last_access
        upper.hit_count = child.hit_count
        upper.priority = child.priority
        upper.owners = child.owners
        pages = length // self.page_size
        upper.hashes, child.hashes = child.hashes[:pages], child.hashes[pages:]
        child.key = child.key[length:]
        child.parent = upper
        upper.children[self._child_key(child.key, 0)] = child
        parent.children[self._child_key(upper.key, 0)] = upper
        return upper

