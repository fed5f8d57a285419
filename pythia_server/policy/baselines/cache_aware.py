"""sgl-router's ``cache_aware`` policy: cache affinity unless the load is imbalanced.

Reproduces ``sgl-router/src/policies/cache_aware.rs`` (sgl-project/sglang, the Rust
router shipped as the ``sglang-router`` package) with the command-line defaults of
``launch_router`` / ``main.rs``: ``--cache-threshold 0.3``, ``--balance-abs-threshold 64``,
``--balance-rel-threshold 1.5``, ``--eviction-interval 120`` s, ``--max-tree-size 2**26``.
(The Rust ``CacheAwareConfig::default()`` differs: 0.5 / 32 / 1.1 / 30 / 10000; the CLI
values are what a deployment gets.)

Per request:
1. load(w) = requests the router sent to w that have not finished (sgl-router increments
   a worker's load when it forwards and decrements on completion). Over *all* workers,
   the system is imbalanced iff ``max - min > balance_abs_threshold`` AND
   ``max > min * balance_rel_threshold``. Then: the least-loaded healthy worker (first on
   ties), and the prompt is still inserted into the tree for that worker.
2. Otherwise: match the prompt in the approximate tree; if matched / prompt length >
   ``cache_threshold`` go to the tenant owning the match, else to the tenant with the
   smallest tree. If that worker is unhealthy: the first healthy worker, tree untouched.
3. Every ``eviction_interval_s`` the tree drops each worker's LRU leaves above
   ``max_tree_size``.

Deviations: the tree holds block hashes, not text (see ``approx_tree``); the prompt's
match rate is matched tokens / prompt tokens, where sgl-router divides characters; the
size cap is 2**26 characters read as 2**24 tokens (~4 characters a token, as
``pythia_server.tokens`` counts); eviction runs at the first routing decision after each
interval instead of on a background thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pythia_server.policy.baselines.approx_tree import ApproxTree
from pythia_server.policy.types import CallInfo, ReplicaView, RouteDecision

__all__ = ["CacheAwareConfig", "CacheAwareRouter"]


@dataclass(frozen=True, slots=True)
class CacheAwareConfig:
    cache_threshold: float = 0.3
    balance_abs_threshold: int = 64
    balance_rel_threshold: float = 1.5
    eviction_interval_s: float = 120.0
    max_tree_size_tokens: int = 2**26 // 4
    block_size: int = 64  # tokens per entry of CallInfo.block_hashes

    def __post_init__(self) -> None:
        if not 0.0 <= self.cache_threshold <= 1.0:
            raise ValueError("cache_threshold must be within [0, 1]")
        if self.balance_abs_threshold < 0 or self.balance_rel_threshold < 0:
            raise ValueError("balance thresholds must be non-negative")
        if self.block_size <= 0:
            raise ValueError("block_size must be positive")


class CacheAwareRouter:
    """Cache affinity from an approximate per-worker radix tree, shortest queue when imbalanced."""

    name = "cache_aware"

    def __init__(self, config: CacheAwareConfig = CacheAwareConfig()) -> None:
        self.config = config
        self.tree = ApproxTree(config.block_size)
        self._load: dict[str, int] = {}
        self._routed: dict[str, str] = {}  # call_id -> replica, so on_finish decrements once
        self._last_eviction_s: float | None = None
        self._known: set[str] = set()  # replicas registered as tenants of the tree

    def load(self, replica_id: str) -> int:
        return self._load.get(replica_id, 0)

    def is_imbalanced(self, loads: Sequence[int]) -> bool:
        """sgl-router's rule: both the absolute and the relative spread are exceeded."""
        if not loads:
            return False
        high, low = max(loads), min(loads)
        cfg = self.config
        return high - low > cfg.balance_abs_threshold and high > low * cfg.balance_rel_threshold

    def route(self, call: CallInfo, replicas: Sequence[ReplicaView], now_s: float) -> RouteDecision:
        if not replicas:
            raise ValueError("no replica to route to")
        ids = [r.replica_id for r in replicas]
        if not self._known.issuperset(ids):
            for replica_id in ids:
                self.tree.add_tenant(replica_id, now_s)
            self._known.update(ids)
        self._maybe_evict(now_s)
        healthy = [r.replica_id for r in replicas if r.healthy]
        if not healthy:
            raise ValueError("no healthy replica to route to")
        load = self._load
        loads = [load.get(i, 0) for i in ids]
        if self.is_imbalanced(loads):
            choice = min(healthy, key=lambda i: load.get(i, 0))
            self.tree.insert(call.block_hashes, choice, now_s)
            reason = f"imbalanced (load {max(loads)} vs {min(loads)}): shortest queue"
            return self._commit(call, choice, reason)

        matched_tokens, owner = self.tree.prefix_match(call.block_hashes, now_s)
        rate = matched_tokens / call.prompt_tokens if call.prompt_tokens > 0 else 0.0
        if rate > self.config.cache_threshold and owner is not None:
            choice, reason = owner, f"cache match {rate:.2f} > {self.config.cache_threshold}"
        else:
            smallest = self.tree.smallest_tenant(ids)
            choice, reason = smallest or healthy[0], f"cache match {rate:.2f}: smallest tree"
        if choice in healthy:
            self.tree.insert(call.block_hashes, choice, now_s)
            return self._commit(call, choice, reason)
        return self._commit(call, healthy[0], f"{choice} unhealthy: first healthy")

    def on_finish(self, call: CallInfo, replica_id: str, now_s: float) -> None:
        routed = self._routed.pop(call.call_id, None)
        if routed is not None and self._load.get(routed, 0) > 0:
            self._load[routed] -= 1

    # ----------------------------------------------------------------- helpers
    def _commit(self, call: CallInfo, replica_id: str, reason: str) -> RouteDecision:
        previous = self._routed.get(call.call_id)
        if previous is not None and self._load.get(previous, 0) > 0:
            self._load[previous] -= 1  # a retried call counts once
        self._routed[call.call_id] = replica_id
        self._load[replica_id] = self._load.get(replica_id, 0) + 1
        return RouteDecision(replica_id, reason)

    def _maybe_evict(self, now_s: float) -> None:
        if self._last_eviction_s is None:
            self._last_eviction_s = now_s
        elif now_s - self._last_eviction_s >= self.config.eviction_interval_s:
            self.tree.evict_tenant_by_size(self.config.max_tree_size_tokens)
            self._last_eviction_s = now_s
