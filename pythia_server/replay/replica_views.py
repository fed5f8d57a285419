"""What the router sees of each simulated replica in replay, apart from driving the calls.

``replay/runner.py`` wires calls through policies; this module builds the ``ReplicaView``s
its router is shown, as ``Replica.view()`` does for the live gateway: calls routed and not
finished and their prompt plus ``max_tokens`` (the driver's own accounting, like
``pool.begin`` / ``pool.end``), the engine's waiting requests and free KV, and, for
routers that read it, what a KV-event index would say is cached. A view is cached until
its replica steps, takes or finishes a call.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pythia_server.engine.virtual import VirtualCluster
from pythia_server.fleet import ReplicaFleet
from pythia_server.policy.types import ReplicaView
from pythia_server.replay.prompts import peek_prefix_tokens

__all__ = ["ROUTERS_READING_CACHE", "ReplicaViews"]

#: Routers that read ``ReplicaView.cached_prefix_tokens`` (a KV-event index's answer); the
#: others keep their own view (sgl-router's approximate tree), so the driver skips the walk.
ROUTERS_READING_CACHE = frozenset({"dynamo_kv"})


@dataclass(slots=True)
class _Outstanding:
    running_requests: int = 0
    outstanding_tokens: int = 0


class ReplicaViews:
    """Per-replica call accounting and the cached views built from it and the engines."""

    def __init__(self, cluster: VirtualCluster, fleet: ReplicaFleet, replica_ids: Iterable[str],
                 router_name: str) -> None:
        self.cluster = cluster
        self.fleet = fleet
        self._outstanding = {rid: _Outstanding() for rid in replica_ids}
        self._cache_view = router_name in ROUTERS_READING_CACHE
        self._view_cache: dict[str, ReplicaView] = {}

    def views(self, ids: list[int]) -> list[ReplicaView]:
        """What ``Replica.view()`` gives the gateway's router, one per serving replica.

        A view is rebuilt only when its replica stepped or took or finished a call since the
        last one was built (or, for routers reading the cache view, every time).
        """
        views = []
        cache = self._view_cache
        for rid in self.fleet.serving:
            view = cache.get(rid)
            if view is None or self._cache_view:
                engine = self.cluster.engine(rid)
                mine = self._outstanding[rid]
                # = EngineLoad's num_waiting_reqs and max_total - num_used_tokens, without
                # EngineLoad's O(queue) sums (engine.load() is the public, slower route)
                free = engine.free_tokens + engine.cache.evictable_size
                view = cache[rid] = ReplicaView(
                    replica_id=rid,
                    running_requests=mine.running_requests,
                    queued_requests=engine.num_waiting,
                    outstanding_tokens=mine.outstanding_tokens,
                    free_kv_tokens=max(free, 0),
                    total_kv_tokens=engine.config.max_total_num_tokens,
                    cached_prefix_tokens=peek_prefix_tokens(engine.cache, ids) if self._cache_view else 0,
                )
            views.append(view)
        return views

    def begin(self, replica_id: str, reserved_tokens: int) -> None:
        """A call was routed to ``replica_id``, reserving its prompt plus ``max_tokens``."""
        mine = self._outstanding[replica_id]
        mine.running_requests += 1
        mine.outstanding_tokens += reserved_tokens

    def end(self, replica_id: str, reserved_tokens: int) -> None:
        """A call on ``replica_id`` finished; its view is stale."""
        mine = self._outstanding[replica_id]
        mine.running_requests -= 1
        mine.outstanding_tokens -= reserved_tokens
        self._view_cache.pop(replica_id, None)

    def calls_on(self, replica_id: str) -> int:
        return self._outstanding[replica_id].running_requests

    def add(self, replica_id: str) -> None:
        self._outstanding[replica_id] = _Outstanding()

    def remove(self, replica_id: str) -> None:
        del self._outstanding[replica_id]
        self._view_cache.pop(replica_id, None)

    def forget(self, replica_id: str) -> None:
        """The replica's load changed: read it again when next asked."""
        self._view_cache.pop(replica_id, None)
