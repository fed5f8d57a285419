from __future__ import annotations

import pytest

from pythia_sdk.protocol import AgentTags
from pythia_server.policy import CallInfo, ReplicaView, RoundRobinRouter, Router, make_router

CALL = CallInfo(call_id="c", tags=AgentTags(), prompt_tokens=10)


def test_round_robin_cycles_over_healthy_replicas() -> None:
    router = RoundRobinRouter()
    replicas = [ReplicaView("a"), ReplicaView("b", healthy=False), ReplicaView("c")]
    picks = [router.route(CALL, replicas, now_s=0.0).replica_id for _ in range(4)]
    assert picks == ["a", "c", "a", "c"]


def test_make_router_names_the_known_ones() -> None:
    assert isinstance(make_router("round_robin"), Router)
    with pytest.raises(ValueError, match="round_robin"):
        make_router("nope")


@pytest.mark.parametrize("name", ["round_robin", "cache_aware", "dynamo_kv", "autellix_locality"])
def test_make_router_builds_every_registered_router(name: str) -> None:
    router = make_router(name, seed=1, block_size=16)
    assert isinstance(router, Router) and router.name == name
    decision = router.route(CALL, [ReplicaView("a"), ReplicaView("b")], now_s=0.0)
    assert decision.replica_id in {"a", "b"} and decision.reason
