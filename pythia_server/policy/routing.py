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


_ROUTERS: dict[str, Callable[[], Router]] = {
    RoundRobinRouter.name: RoundRobinRouter,
}


def make_router(name: str) -> Router:
    """The router users name on the command line; a clear error for an unknown one."""
    try:
        return _ROUTERS[name]()
    except KeyError:
        known = ", ".join(sorted(_ROUTERS))
        raise ValueError(f"unknown router {name!r}; known: {known}") from None
