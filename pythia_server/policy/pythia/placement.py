"""Lookahead placement: route by predicted KV demand and predicted work, with cache affinity.

For a call of a proactive workflow type, each healthy replica is judged by

1. **fit**: the KV the call will need there (its uncached prompt tokens plus its predicted
   output: the agent's length bound, which holds with the profiler's confidence) added to
   what calls routed there still need by the same measure, against
   ``max_kv_fill`` x the replica's KV. Replicas where it does not fit are left out (when
   it fits nowhere: the one it overflows least). Because every reservation is a
   high-quantile bound, the chance that a replica runs out (and retracts) stays bounded.
2. **work**: the predicted seconds of work queued there (uncached prefill + predicted
   decode of the calls in flight) plus this call's uncached prefill.
3. **affinity**, by ``config.affinity``: ``tiebreak`` picks the largest predicted prefix
   hit among replicas whose work is within ``tie_tolerance`` of the least; ``weighted``
   minimises queued work + ``affinity_weight`` x the uncached prefill, so a hit is worth
   exactly the prefill time it saves.

The predicted hit per replica comes from the router's own index of the blocks it sent
where (as sgl-router's tree), and from a warm the cache manager planned for this
session's next agent. Calls of shadow or unknown types (and every call with
``config.lookahead`` off) are placed cache-aware-like: sgl-router's rule (balance when
imbalanced by 64 and 1.5x, else a match over 0.3 wins) on the same index and loads.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from pythia_server.policy.pythia.context import PythiaContext
from pythia_server.policy.types import CallInfo, ReplicaView, RouteDecision

__all__ = ["LookaheadRouter", "PrefixIndex"]


class PrefixIndex:
    """Which replicas were sent each block (chained hashes): an approximate cache map.

    Bounded like sgl-router's tree (2**24 tokens of blocks by default), least recently
    sent blocks dropped first; replicas are bits of one int per block.
    """

    def __init__(self, block_size: int, max_blocks: int | None = None) -> None:
        self.block_size = block_size
        self.max_blocks = max_blocks if max_blocks is not None else max(2**24 // block_size, 1)
        self._blocks: OrderedDict[int, int] = OrderedDict()  # block hash -> replica bits
        self._bit: dict[str, int] = {}

    def _bit_of(self, replica_id: str) -> int:
        bit = self._bit.get(replica_id)
        if bit is None:
            bit = self._bit[replica_id] = 1 << len(self._bit)
        return bit

    def matched_tokens(self, hashes: Sequence[int], replica_id: str) -> int:
        """Tokens of the longest prefix of ``hashes`` sent to ``replica_id`` (binary search:
        a chained hash names its whole prefix, so presence is monotone along the prompt)."""
        bit = self._bit.get(replica_id)
        if bit is None:
            return 0
        blocks = self._blocks
        lo, hi = 0, len(hashes)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if blocks.get(hashes[mid - 1], 0) & bit:
                lo = mid
            else:
                hi = mid - 1
        return lo * self.block_size

    def insert(self, hashes: Sequence[int], replica_id: str) -> None:
        if not hashes:
            return
        bit = self._bit_of(replica_id)
        start = self.matched_tokens(hashes, replica_id) // self.block_size
        blocks = self._blocks
        for block in hashes[start:]:
            blocks[block] = blocks.get(block, 0) | bit
            blocks.move_to_end(block)
        blocks.move_to_end(hashes[-1])
        while len(blocks) > self.max_blocks:
            blocks.popitem(last=False)


@dataclass(slots=True)
class _Load:
    calls: int = 0
    kv_tokens: int = 0  # predicted KV still needed by calls in flight
    work_s: float = 0.0  # predicted seconds of work of calls in flight


class LookaheadRouter:
    """A ``Router``: predicted-demand placement for proactive types, cache-aware otherwise."""

    name = "pythia-lookahead"

    def __init__(self, context: PythiaContext) -> None:
        self.context = context
        self.config = context.config
        self.index = PrefixIndex(self.config.block_size)
        self._loads: dict[str, _Load] = {}
        self._routed: dict[str, tuple[str, int, float]] = {}  # call id -> (replica, kv, work)

    def route(self, call: CallInfo, replicas: Sequence[ReplicaView], now_s: float) -> RouteDecision:
        if not replicas:
            raise ValueError("no replica to route to")
        ctx, cfg = self.context, self.config
        ctx.saw_replicas(replicas)
        healthy = [r for r in replicas if r.healthy] or list(replicas)
        hits = {r.replica_id: min(self.index.matched_tokens(call.block_hashes, r.replica_id), call.prompt_tokens)
                for r in healthy}
        warm = ctx.warm_targets.get((call.tags.session or "", call.tags.agent or ""))
        if warm is not None and warm[0] in hits:
            hits[warm[0]] = max(hits[warm[0]], min(warm[1], call.prompt_tokens))
        prediction = ctx.predict_call(call, now_s) if cfg.lookahead else None
        output = ctx.output_tokens(call, prediction)
        if prediction is None:
            choice, reason = self._reactive(call, healthy, hits)
        else:
            choice, reason = self._lookahead(call, healthy, hits, output)
        uncached = call.prompt_tokens - hits[choice]
        self._commit(call, choice, uncached + output,
                     uncached * cfg.prefill_s_per_token + output * cfg.decode_s_per_token)
        self.index.insert(call.block_hashes, choice)
        ctx.started(call, choice, now_s)
        return RouteDecision(choice, reason)

    def on_finish(self, call: CallInfo, replica_id: str, now_s: float) -> None:
        routed = self._routed.pop(call.call_id, None)
        if routed is None:
            return
        load = self._loads[routed[0]]
        load.calls -= 1
        load.kv_tokens -= routed[1]
        load.work_s = max(load.work_s - routed[2], 0.0)

    def load(self, replica_id: str) -> tuple[int, int, float]:
        """(calls, predicted KV tokens, predicted work seconds) in flight on a replica."""
        load = self._loads.get(replica_id, _Load())
        return load.calls, load.kv_tokens, load.work_s

    # ------------------------------------------------------------------ choices
    def _lookahead(
        self, call: CallInfo, healthy: list[ReplicaView], hits: dict[str, int], output: int
    ) -> tuple[str, str]:
        cfg = self.config
        rows = []  # (overflow tokens, queued work, uncached prefill, replica)
        for view in healthy:
            rid = view.replica_id
            load = self._loads.get(rid, _Load())
            need = call.prompt_tokens - hits[rid] + output
            capacity = view.total_kv_tokens * cfg.max_kv_fill if view.total_kv_tokens > 0 else float("inf")
            overflow = max(load.kv_tokens + need - capacity, 0.0)
            rows.append((overflow, load.work_s, (call.prompt_tokens - hits[rid]) * cfg.prefill_s_per_token, rid))
        fitting = [row for row in rows if row[0] == 0.0]
        if not fitting:
            best = min(rows, key=lambda row: (row[0], row[1], row[3]))
            return best[3], f"fits nowhere: least overflow ({best[0]:.0f} tokens)"
        if cfg.affinity == "weighted":
            best = min(fitting, key=lambda row: (row[1] + cfg.affinity_weight * row[2], row[3]))
            return best[3], f"fits; work {best[1]:.2f}s + prefill {best[2]:.3f}s (hit {hits[best[3]]})"
        least = min(row[1] + row[2] for row in fitting)
        tied = [row for row in fitting if row[1] + row[2] <= max(least * (1 + cfg.tie_tolerance), least + cfg.tie_floor_s)]
        best = min(tied, key=lambda row: (-hits[row[3]], row[1] + row[2], row[3]))
        return best[3], f"fits; least work {least:.2f}s, {len(tied)} tied, hit {hits[best[3]]}"

    def _reactive(self, call: CallInfo, healthy: list[ReplicaView], hits: dict[str, int]) -> tuple[str, str]:
        """sgl-router's cache_aware rule on this router's index and loads (shadow mode)."""
        cfg = self.config
        loads = {v.replica_id: self._loads.get(v.replica_id, _Load()).calls for v in healthy}
        high, low = max(loads.values()), min(loads.values())
        least = min(loads, key=lambda rid: (loads[rid], rid))
        if high - low > cfg.balance_abs_threshold and high > low * cfg.balance_rel_threshold:
            return least, f"imbalanced ({high} vs {low}): least loaded"
        best = min(hits, key=lambda rid: (-hits[rid], loads[rid], rid))
        rate = hits[best] / call.prompt_tokens if call.prompt_tokens > 0 else 0.0
        if rate > cfg.cache_threshold:
            return best, f"reactive: cache match {rate:.2f}"
        return least, f"reactive: match {rate:.2f}, least loaded"

    def _commit(self, call: CallInfo, replica_id: str, kv_tokens: int, work_s: float) -> None:
        if call.call_id in self._routed:  # a retried call counts once
            self.on_finish(call, replica_id, 0.0)
        self._routed[call.call_id] = (replica_id, kv_tokens, work_s)
        load = self._loads.setdefault(replica_id, _Load())
        load.calls += 1
        load.kv_tokens += kv_tokens
        load.work_s += work_s
