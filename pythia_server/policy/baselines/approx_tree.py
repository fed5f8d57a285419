"""sgl-router's approximate multi-tenant radix tree, keyed by chained KV block hashes.

Reproduces ``sgl-router/src/policies/tree.rs`` (sgl-project/sglang): one tree shared by
all workers ("tenants"); each node records, per tenant, when that tenant last touched it;
``insert`` attaches the tenant along the request's path; ``prefix_match`` walks as deep
as any tenant has been and returns one tenant owning the deepest node, refreshing that
tenant's timestamps up to the root; ``evict_tenant_by_size`` drops each over-budget
tenant's least recently used leaves until its size fits; ``smallest_tenant`` is the one
with the fewest stored units.

Deviations, each forced by what a policy here sees:
- sgl-router stores request *text* and counts characters; we get the prompt's chained
  block hashes (``CallInfo.block_hashes``), so a node is one full block and sizes are in
  tokens (blocks x ``block_size``). Because block i's hash covers blocks 0..i, a path of
  hashes is exactly a radix path; no node ever needs splitting.
- Rust's ``DashMap`` iteration order picks "the first tenant" of the deepest node; we pick
  the tenant with the latest stamp on that node (ties: registration order) so runs repeat.
- Hashes must be prefix-chained (``pythia_server.tokens.block_hashes``; Mooncake
  ``hash_ids`` have the same property): a block's hash names its whole prefix.
- Timestamps are the caller's ``now_s``, not the wall clock, and are kept lazily: a touch
  stamps only the deepest node it reaches, and eviction carries a removed leaf's stamp up
  to its parent. Leaves are evicted in exactly tree.rs's order (a node becomes a leaf only
  after its descendants went, each carrying its stamp up); lookups cost O(log n) instead of
  a walk of the whole prompt.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["ApproxTree"]

_ROOT = 0  # block hashes are 64-bit and never 0 in practice; 0 keys the root


@dataclass(slots=True)
class _Node:
    parent: int | None
    children: set[int] = field(default_factory=set)
    tenant_access_s: dict[str, float] = field(default_factory=dict)


class ApproxTree:
    """What the router believes each worker has cached, learned only from its own routing."""

    def __init__(self, block_size: int) -> None:
        if block_size <= 0:
            raise ValueError("block_size must be positive")
        self.block_size = block_size
        self._nodes: dict[int, _Node] = {_ROOT: _Node(parent=None)}
        self._tenant_tokens: dict[str, int] = {}
        self._order: dict[str, int] = {}  # registration order, for deterministic ties

    # ----------------------------------------------------------------- tenants
    def add_tenant(self, tenant: str, now_s: float = 0.0) -> None:
        """Register a worker with an empty tree (sgl-router inserts "" for each worker)."""
        if tenant not in self._tenant_tokens:
            self._tenant_tokens[tenant] = 0
            self._order[tenant] = len(self._order)
            self._nodes[_ROOT].tenant_access_s[tenant] = now_s

    def tenant_tokens(self, tenant: str) -> int:
        return self._tenant_tokens.get(tenant, 0)

    def smallest_tenant(self, among: Iterable[str] | None = None) -> str | None:
        """The registered tenant with the fewest tokens stored (``get_smallest_tenant``)."""
        names = list(self._tenant_tokens) if among is None else [t for t in among if t in self._tenant_tokens]
        if not names:
            return None
        return min(names, key=lambda t: (self._tenant_tokens[t], self._order[t]))

    # ----------------------------------------------------------------- operations
    def insert(self, hashes: Sequence[int], tenant: str, now_s: float) -> None:
        """Attach ``tenant`` to every block of ``hashes`` (creating nodes as needed)."""
        self.add_tenant(tenant, now_s)
        if not hashes:
            return
        nodes = self._nodes
        owned = self._depth(hashes, lambda n: tenant in n.tenant_access_s)
        parent = hashes[owned - 1] if owned else _ROOT
        for block_hash in hashes[owned:]:
            node = nodes.get(block_hash)
            if node is None:
                node = _Node(parent=parent)
                nodes[block_hash] = node
                nodes[parent].children.add(block_hash)
            node.tenant_access_s[tenant] = now_s
            self._tenant_tokens[tenant] += self.block_size
            parent = block_hash
        nodes[hashes[-1]].tenant_access_s[tenant] = now_s

    def prefix_match(self, hashes: Sequence[int], now_s: float) -> tuple[int, str | None]:
        """(matched tokens, a tenant owning the deepest matched block) for a prompt."""
        depth = self._depth(hashes, lambda n: bool(n.tenant_access_s))
        deepest = self._nodes[hashes[depth - 1]] if depth else self._nodes[_ROOT]
        owners = deepest.tenant_access_s
        if not owners:
            return 0, None
        tenant = max(owners, key=lambda t: (owners[t], -self._order.get(t, 0)))
        owners[tenant] = now_s
        return depth * self.block_size, tenant

    def evict_tenant_by_size(self, max_tokens: int) -> int:
        """Drop LRU leaves of every tenant above ``max_tokens``; returns tokens dropped."""
        dropped = 0
        for tenant in list(self._tenant_tokens):
            if self._tenant_tokens[tenant] <= max_tokens:
                continue
            heap = [
                (node.tenant_access_s[tenant], key)
                for key, node in self._nodes.items()
                if key != _ROOT and self._is_leaf_of(key, tenant)
            ]
            heapq.heapify(heap)
            while heap and self._tenant_tokens[tenant] > max_tokens:
                stamp, key = heapq.heappop(heap)
                parent = self._nodes[key].parent
                dropped += self._detach(key, tenant)
                if parent is None or parent == _ROOT:
                    continue
                owners = self._nodes[parent].tenant_access_s
                owners[tenant] = max(owners[tenant], stamp)  # the touch that went through it
                if self._is_leaf_of(parent, tenant):
                    heapq.heappush(heap, (owners[tenant], parent))
        return dropped

    def remove_tenant(self, tenant: str) -> None:
        """Forget a worker entirely (it left the pool)."""
        for key in [k for k, n in self._nodes.items() if tenant in n.tenant_access_s]:
            if key in self._nodes:
                self._nodes[key].tenant_access_s.pop(tenant, None)
        for key in [k for k, n in self._nodes.items() if k != _ROOT and not n.tenant_access_s]:
            self._drop_node(key)
        self._tenant_tokens.pop(tenant, None)

    # ----------------------------------------------------------------- helpers
    def _depth(self, hashes: Sequence[int], present: Callable[[_Node], bool]) -> int:
        """How many leading blocks satisfy ``present``; binary search, as presence is monotone.

        Chained hashes make block i present only if blocks 0..i-1 are (a tenant is attached
        along the whole path and detached leaves first), so the answer is a prefix length.
        """
        nodes = self._nodes
        lo, hi = 0, len(hashes)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            node = nodes.get(hashes[mid - 1])
            if node is not None and present(node):
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _is_leaf_of(self, key: int, tenant: str) -> bool:
        node = self._nodes[key]
        if tenant not in node.tenant_access_s:
            return False
        return not any(tenant in self._nodes[child].tenant_access_s for child in node.children)

    def _detach(self, key: int, tenant: str) -> int:
        node = self._nodes[key]
        node.tenant_access_s.pop(tenant, None)
        self._tenant_tokens[tenant] -= self.block_size
        if not node.tenant_access_s and not node.children:
            self._drop_node(key)
        return self.block_size

    def _drop_node(self, key: int) -> None:
        node = self._nodes.pop(key, None)
        if node is None:
            return
        if node.parent is not None and node.parent in self._nodes:
            self._nodes[node.parent].children.discard(key)
