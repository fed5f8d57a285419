"""NVIDIA Dynamo's KV-aware router: the cheapest worker by prefill-plus-decode blocks.

Reproduces ``DefaultWorkerSelector`` in ai-dynamo/dynamo ``lib/kv-router/src/scheduling/
selector.rs`` (``lib/llm/src/kv_router/scheduler.rs`` in older releases) with its defaults
``--kv-overlap-score-weight 1.0`` and ``--router-temperature 0.0``. For each worker w:

    overlap_w          = the request's leading blocks cached on w (KV-event indexer)
    prefill_tokens_w   = uncached prompt tokens of w's requests still in prefill
                         + this request's uncached tokens (isl - overlap_w * block_size)
    decode_blocks_w    = w's active blocks (unique blocks of its in-flight requests)
                         + this request's blocks not already among them
    logit_w            = overlap_score_weight * prefill_tokens_w / block_size + decode_blocks_w

Lower is better. Temperature 0: the minimum; ties go to the worker with the smaller cache
tree, then uniformly at random. Temperature t > 0: softmax over negated logits rescaled to
[-1/t, 0] (``softmax_sample``), sampled with the injected ``random.Random``.

Inputs: the overlap comes from ``ReplicaView.cached_prefix_tokens`` (the driver's view of
the engine's cache, which is what Dynamo's KV-event indexer holds); the cache-tree size
for ties is ``total_kv_tokens - free_kv_tokens``. Active blocks and prefill tokens are
Dynamo's own bookkeeping of the requests it routed (``ActiveSequences``), kept here.

Blocks are the prompt's full blocks (``CallInfo.block_hashes``), deduplicated per worker
as ``ActiveSequences`` does (``new_blocks`` counts the request's blocks absent from the
worker's active set, found as the depth of the prompt among active prompts, which chained
hashes make a prefix; the KV-cache overlap only reduces prefill tokens).

Deviations: Dynamo frees a request's prefill tokens when its first token arrives; a driver
that reports it calls ``mark_prefill_completed``, otherwise they are freed at finish.
Decode growth of a request's blocks is not tracked (Dynamo tracks it only when told the
expected output length).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from pythia_server.policy.types import CallInfo, ReplicaView, RouteDecision

__all__ = ["DynamoKvConfig", "DynamoKvRouter", "softmax_sample"]


@dataclass(frozen=True, slots=True)
class DynamoKvConfig:
    overlap_score_weight: float = 1.0
    router_temperature: float = 0.0
    block_size: int = 64  # tokens per KV block (Dynamo's --kv-cache-block-size = the engine page size)

    def __post_init__(self) -> None:
        if self.overlap_score_weight < 0 or self.router_temperature < 0:
            raise ValueError("overlap_score_weight and router_temperature must be non-negative")
        if self.block_size <= 0:
            raise ValueError("block_size must be positive")


@dataclass(slots=True)
class _Active:
    replica_id: str
    hashes: tuple[int, ...]
    prefill_tokens: int


def softmax_sample(logits: Sequence[float], temperature: float, sample: float) -> int:
    """Index chosen by Dynamo's ``softmax_sample_with_sample`` (lower logit = likelier)."""
    if not logits:
        raise ValueError("empty logits")
    if temperature == 0.0:
        return min(range(len(logits)), key=lambda i: logits[i])
    low, high = min(logits), max(logits)
    if low == high:
        probs = [1.0 / len(logits)] * len(logits)
    else:
        scale = -1.0 / ((high - low) * temperature)
        top = low * scale
        weights = [math.exp(v * scale - top) for v in logits]
        total = sum(weights)
        probs = [w / total for w in weights]
    cumulative = 0.0
    for index, p in enumerate(probs):
        cumulative += p
        if sample <= cumulative:
            return index
    return len(logits) - 1


def _active_depth(hashes: Sequence[int], active: dict[int, int]) -> int:
    """Leading blocks already active; binary search, as chained hashes make it a prefix."""
    lo, hi = 0, len(hashes)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if hashes[mid - 1] in active:
            lo = mid
        else:
            hi = mid - 1
    return lo


class DynamoKvRouter:
    """Dynamo's ``--router-mode kv`` cost function over the driver's cache view."""

    name = "dynamo_kv"

    def __init__(self, config: DynamoKvConfig = DynamoKvConfig(), rng: random.Random | None = None) -> None:
        self.config = config
        self._rng = rng if rng is not None else random.Random(0)
        self._active: dict[str, _Active] = {}  # call_id -> what it holds
        self._block_refs: dict[str, dict[int, int]] = {}  # replica -> block hash -> requests holding it
        self._prefill: dict[str, int] = {}

    # ----------------------------------------------------------------- state
    def active_blocks(self, replica_id: str) -> int:
        return len(self._block_refs.get(replica_id, {}))

    def prefill_tokens(self, replica_id: str) -> int:
        return self._prefill.get(replica_id, 0)

    def new_tokens(self, call: CallInfo, replica: ReplicaView) -> int:
        """Dynamo's ``new_tokens(isl, overlap)``: prompt tokens outside the cached full blocks."""
        bs = self.config.block_size
        overlap_blocks = min(replica.cached_prefix_tokens, call.prompt_tokens) // bs
        return call.prompt_tokens - overlap_blocks * bs

    def logit(self, call: CallInfo, replica: ReplicaView) -> float:
        bs = self.config.block_size
        prefill_blocks = (self.prefill_tokens(replica.replica_id) + self.new_tokens(call, replica)) / bs
        active = self._block_refs.get(replica.replica_id, {})
        decode_blocks = len(active) + len(call.block_hashes) - _active_depth(call.block_hashes, active)
        return self.config.overlap_score_weight * prefill_blocks + decode_blocks

    # ----------------------------------------------------------------- Router
    def route(self, call: CallInfo, replicas: Sequence[ReplicaView], now_s: float) -> RouteDecision:
        healthy = [r for r in replicas if r.healthy]
        if not healthy:
            raise ValueError("no healthy replica to route to")
        logits = [self.logit(call, r) for r in healthy]
        if self.config.router_temperature == 0.0:
            best = min(logits)
            tied = [r for r, v in zip(healthy, logits) if v == best]
            if len(tied) > 1:
                sizes = [r.total_kv_tokens - r.free_kv_tokens for r in tied]
                if all(s == sizes[0] for s in sizes):
                    choice = tied[self._rng.randrange(len(tied))]
                else:
                    choice = tied[min(range(len(tied)), key=sizes.__getitem__)]
            else:
                choice = tied[0]
            reason = f"min cost {best:.2f}"
        else:
            index = softmax_sample(logits, self.config.router_temperature, self._rng.random())
            choice = healthy[index]
            reason = f"softmax cost {logits[index]:.2f} (t={self.config.router_temperature})"
        self._add(call, choice.replica_id, self.new_tokens(call, choice))
        return RouteDecision(choice.replica_id, reason)

    def mark_prefill_completed(self, call: CallInfo, now_s: float) -> None:
        """Dynamo's ``mark_prefill_completed``: the call's first token has been produced."""
        active = self._active.get(call.call_id)
        if active is not None and active.prefill_tokens:
            self._prefill[active.replica_id] -= active.prefill_tokens
            active.prefill_tokens = 0

    def on_finish(self, call: CallInfo, replica_id: str, now_s: float) -> None:
        active = self._active.pop(call.call_id, None)
        if active is None:
            return
        rid = active.replica_id
        self._prefill[rid] = self._prefill.get(rid, 0) - active.prefill_tokens
        refs = self._block_refs.get(rid, {})
        for block_hash in active.hashes:
            count = refs.get(block_hash, 0) - 1
            if count > 0:
                refs[block_hash] = count
            else:
                refs.pop(block_hash, None)

    # ----------------------------------------------------------------- helpers
    def _add(self, call: CallInfo, replica_id: str, prefill: int) -> None:
        if call.call_id in self._active:
            self.on_finish(call, self._active[call.call_id].replica_id, 0.0)  # a retry counts once
        hashes = tuple(call.block_hashes)
        self._active[call.call_id] = _Active(replica_id, hashes, prefill)
        refs = self._block_refs.setdefault(replica_id, {})
        for block_hash in hashes:
            refs[block_hash] = refs.get(block_hash, 0) + 1
        self._prefill[replica_id] = self._prefill.get(replica_id, 0) + prefill
