"""KV accounting between the radix tree and requests' private slots, apart from scheduling.

Follows SGLang's ``mem_cache/radix_cache.py`` ``cache_unfinished_req`` /
``cache_finished_req``: a request's computed, page-aligned tokens move into the tree and
stay locked there while it runs; the rest (the unaligned tail, generated tokens) is the
request's own, counted here as private KV until it finishes or is released. Memory is
counted in tokens. The scheduler (``engine/core.py``) decides what runs; this module only
says whether the KV fits and keeps the two totals honest.
"""

from __future__ import annotations

from pythia_server.engine.radix_cache import RadixCache
from pythia_server.engine.request import Req

__all__ = ["KvLedger"]


class KvLedger:
    """The KV pool of one engine: tree tokens (``cache``) plus tokens owned by requests."""

    def __init__(self, cache: RadixCache, max_total_num_tokens: int, page_size: int, radix_enabled: bool) -> None:
        self.cache = cache
        self.max_total_num_tokens = max_total_num_tokens
        self.page_size = page_size
        self.radix_enabled = radix_enabled
        self.private_total = 0  # KV tokens owned by requests, outside the tree

    @property
    def free_tokens(self) -> int:
        return self.max_total_num_tokens - self.cache.total_size - self.private_total

    def alloc(self, tokens: int, now_s: float, force: bool = False) -> bool:
        """Take ``tokens`` of KV, evicting cache if needed; ``force`` also evicts pinned cache."""
        free = self.free_tokens
        if free < tokens:
            self.cache.evict(tokens - free, now_s, force)
            if self.free_tokens < tokens:
                return False
        self.private_total += tokens
        return True

    def unreserve(self, tokens: int) -> None:
        """Give back ``tokens`` taken by ``alloc`` that no request wrote (a decode run cut short)."""
        self.private_total -= tokens

    def commit(self, req: Req, kv_len: int) -> None:
        """Move the request's computed, page-aligned tokens into the tree and lock them there."""
        if not self.radix_enabled:
            return
        page = self.page_size
        aligned = kv_len // page * page
        if aligned <= req.locked_len:
            return
        # only the new part is walked: the locked node already holds the first locked_len tokens
        _, node = self.cache.insert(req.kv_slice(req.locked_len, aligned), req.priority, req.last_node,
                                    owner=req.owner)
        moved = aligned - req.locked_len  # either adopted by new nodes or duplicates of cached ones
        self.cache.move_lock(req.last_node, node)
        req.last_node = node
        req.locked_len = aligned
        req.private -= moved
        self.private_total -= moved

    def release(self, req: Req) -> None:
        """Unlock the request's tree path and free its private KV (finish, abort, retraction)."""
        self.cache.dec_lock_ref(req.last_node)
        req.last_node = self.cache.root
        req.locked_len = 0
        self.private_total -= req.private
        req.private = 0
