"""Routing policies: which replica serves a call."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pythia_server.policy.types import CallInfo, ReplicaView, RouteDecision, Router


class RoundRobinRouter:
    """SGLang's router in its default ``round_robin`` mode: next healthy replica in turn."""

    name = "round_robin"

    def __init__(self) -> None:
        self._next = 0

    def route(self, call: CallInfo, replicas: Sequence[ReplicaView], now_s: float) -> RouteDecision:
        healthy = [r for r in replicas if r.healthy] or list(replicas)
        if not healthy:
            raise ValueError("no replica to route to")
        choice = healthy[self._next % len(healthy)]
        self._next += 1
        return RouteDecision(choice.replica_id, "round robin")

    def on_finish(self, call: CallInfo, replica_id: str, now_s: float) -> None:
        return None


def _cache_aware(seed: int, block_size: int) -> Router:
    from pythia_server.policy.baselines.cache_aware import CacheAwareConfig, CacheAwareRouter

    return CacheAwareRouter(CacheAwareConfig(block_size=block_size))


def _dynamo_kv(seed: int, block_size: int) -> Router:
    import random

    from pythia_server.policy.baselines.dynamo_kv import DynamoKvConfig, DynamoKvRouter

    return DynamoKvRouter(DynamoKvConfig(block_size=block_size), rng=random.Random(seed))


def _autellix_locality(seed: int, block_size: int) -> Router:
    from pythia_server.policy.baselines.autellix import AutellixRouter

    return AutellixRouter()


# Baseline routers are imported lazily: pythia_server.policy.baselines imports this module.
_ROUTERS: dict[str, Callable[[int, int], Router]] = {
    RoundRobinRouter.name: lambda seed, block_size: RoundRobinRouter(),
    "cache_aware": _cache_aware,
    "dynamo_kv": _dynamo_kv,
    "autellix_locality": _autellix_locality,
}


def make_router(name: str, *, seed: int = 0, block_size: int = 64) -> Router:
    """The router users name on the command line; a clear error for an unknown one.

    ``seed`` feeds routers that sample; ``block_size`` is the number of tokens per entry of
    ``CallInfo.block_hashes`` for routers that match prefixes.
    """
    try:
        factory = _ROUTERS[name]
    except KeyError:
        known = ", ".join(sorted(_ROUTERS))
        raise ValueError(f"unknown router {name!r}; known: {known}") from None
    return factory(seed, block_size)
