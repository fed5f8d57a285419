"""The engine-facing side of a workload call: its token ids, its block hashes, a read-only
cache peek, and cache-hint prefetches rebuilt from block hashes into prefill-only requests.

Dynamo's synthesis (``workload.prompt_token_ids``) repeats each hash id over its block;
everything here exploits that to stay proportional to blocks, not tokens, so 10,000-run
replays stay fast.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pythia_server.engine.radix_cache import RadixCache
from pythia_server.engine.types import GenerateRequest
from pythia_server.engine.virtual import VirtualCluster
from pythia_server.policy.types import PrefetchAction
from pythia_server.replay.workload import WorkloadRequest, prompt_token_ids

__all__ = ["BlockHasher", "Prefetcher", "peek_prefix_tokens", "prompt_ids"]

_BLOCK_SEED = 0


def peek_prefix_tokens(cache: RadixCache, ids: Sequence[int]) -> int:
    """Longest cached page-aligned prefix of ``ids``, without touching LRU state or splitting."""
    return cache.peek_prefix_len(ids)


def prompt_ids(request: WorkloadRequest) -> list[int]:
    """``workload.prompt_token_ids``, a third faster (whole blocks appended, one tail)."""
    size, length, hash_ids = request.block_size, request.input_length, request.hash_ids
    full = min(length // size, len(hash_ids))
    ids: list[int] = []
    for h in hash_ids[:full]:
        ids += [h] * size
    rest = length - full * size
    if rest > 0 and full < len(hash_ids):
        ids += [hash_ids[full]] * rest
    return ids


class BlockHasher:
    """Chained block hashes of a synthesised prompt at the gateway's block size, per hash id.

    Dynamo's synthesis repeats hash id ``h`` over its whole trace block, so a gateway
    block inside it is ``[h] * block_size`` and its chained hash needs only the parent and
    ``h``: computing it per block rather than per token keeps 10,000-run replays fast.
    Values differ from ``tokens.block_hashes`` (Python's tuple hash, not CRC) but equal
    exactly when those would be equal (same prefix), which is all a policy compares.
    Gateway blocks straddling trace blocks (sizes not dividing) fall back to tokens.
    """

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.block_token: dict[int, int] = {}  # block hash -> its repeated token (prefetch rebuild)

    def hashes(self, request: WorkloadRequest, keep_tokens: bool) -> tuple[int, ...]:
        b, tb = self.block_size, request.block_size
        full = request.input_length // b
        if tb % b != 0:
            from pythia_server.tokens import block_hashes

            return tuple(block_hashes(prompt_token_ids(request), b))
        per = tb // b
        ids = request.hash_ids
        out: list[int] = []
        parent = _BLOCK_SEED
        if per == 1:
            for h in ids[:full]:
                parent = hash((parent, h))
                out.append(parent)
        else:
            for i in range(full):
                parent = hash((parent, ids[i // per]))
                out.append(parent)
        if keep_tokens:
            token = self.block_token
            for i, value in enumerate(out):
                token[value] = ids[i // per]
        return tuple(out)


class Prefetcher:
    """A ``PrefetchAction`` realised at its ``at_s`` as a prefill-only request (``max_new_tokens``
    0) on its replica, only if that replica still serves, has room, and lacks the prefix.

    ``touched(replica_id)`` tells the runner the replica's view changed; ``report(action,
    sent)`` (the policy's optional ``on_prefetch_result``) learns whether it went out.
    """

    def __init__(self, cluster: VirtualCluster, hasher: BlockHasher, is_serving: Callable[[str], bool],
                 touched: Callable[[str], None], report: Callable[[PrefetchAction, bool], None] | None) -> None:
        self.cluster, self.hasher = cluster, hasher
        self._is_serving, self._touched, self._report = is_serving, touched, report
        self.sent = self.dropped = self.resident = 0
        self._seq = 0

    def schedule(self, action: PrefetchAction) -> None:
        self.cluster.call_at(action.at_s, lambda: self._run(action))

    def _run(self, action: PrefetchAction) -> None:
        sent = self._send(action)
        if self._report is not None:
            self._report(action, sent)

    def _send(self, action: PrefetchAction) -> bool:
        ids: list[int] = []
        size = self.hasher.block_size
        for block in action.block_hashes:
            token = self.hasher.block_token.get(block)
            if token is None:
                break  # a block the driver never saw: warm what it can rebuild
            ids.extend([token] * size)
        engine = self.cluster.engine(action.replica_id) if self._is_serving(action.replica_id) else None
        if engine is None or len(ids) < 2:
            self.dropped += 1
            return False
        if peek_prefix_tokens(engine.cache, ids) >= len(ids) - size:
            self.resident += 1
            return False  # already resident: nothing to do
        if engine.free_tokens + engine.cache.evictable_size < len(ids):
            self.dropped += 1
            return False
        self._seq += 1
        self.sent += 1
        request = GenerateRequest(rid=f"prefetch-{self._seq}", input_ids=ids, max_new_tokens=0, owner=action.owner)
        self._touched(action.replica_id)
        self.cluster.submit(action.replica_id, request, lambda _done: None)
        return True
