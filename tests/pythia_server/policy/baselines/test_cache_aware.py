from __future__ import annotations

import pytest

from pythia_sdk.protocol import AgentTags
from pythia_server.policy.baselines import CacheAwareConfig, CacheAwareRouter
from pythia_server.policy.types import CallInfo, ReplicaView

BS = 64


def call(call_id: str, hashes: tuple[int, ...], prompt_tokens: int | None = None) -> CallInfo:
    tokens = prompt_tokens if prompt_tokens is not None else len(hashes) * BS
    return CallInfo(call_id=call_id, tags=AgentTags(), prompt_tokens=tokens, block_hashes=hashes)


REPLICAS = [ReplicaView("a"), ReplicaView("b")]


@pytest.mark.parametrize(
    ("loads", "imbalanced"),
    [
        ([0, 64], False),  # spread 64 is not > 64
        ([0, 65], True),
        ([100, 165], True),  # 65 > 64 and 165 > 150
        ([200, 265], False),  # 65 > 64 but 265 <= 300
        ([10, 10], False),
        ([], False),
    ],
)
def test_imbalance_needs_both_thresholds(loads: list[int], imbalanced: bool) -> None:
    assert CacheAwareRouter().is_imbalanced(loads) is imbalanced


def test_defaults_are_the_cli_ones() -> None:
    cfg = CacheAwareConfig()
    assert (cfg.cache_threshold, cfg.balance_abs_threshold, cfg.balance_rel_threshold) == (0.3, 64, 1.5)
    assert cfg.eviction_interval_s == 120.0


def test_same_prefix_sticks_and_new_prefix_goes_to_smallest_tree() -> None:
    router = CacheAwareRouter(CacheAwareConfig(block_size=BS))
    first = router.route(call("1", (1, 2, 3, 4)), REPLICAS, 0.0)
    assert first.replica_id == "a" and "smallest tree" in first.reason
    again = router.route(call("2", (1, 2, 3, 4, 5)), REPLICAS, 1.0)
    assert again.replica_id == "a" and "cache match" in again.reason
    other = router.route(call("3", (9, 8, 7)), REPLICAS, 2.0)
    assert other.replica_id == "b"


@pytest.mark.parametrize(("matched_blocks", "expected"), [(3, "b"), (4, "a")])
def test_match_rate_must_exceed_threshold(matched_blocks: int, expected: str) -> None:
    router = CacheAwareRouter(CacheAwareConfig(block_size=BS))
    router.route(call("seed", (1, 2, 3, 4, 5)), REPLICAS, 0.0)  # tree of a: 5 blocks
    prompt = tuple(range(1, matched_blocks + 1)) + tuple(range(100, 100 + 10 - matched_blocks))
    # 640-token prompt: 3 blocks = 0.3 (not > 0.3) goes to the smallest tree, 4 = 0.4 stays
    assert router.route(call("x", prompt, 640), REPLICAS, 1.0).replica_id == expected


def test_falls_back_to_shortest_queue_exactly_when_imbalance_is_crossed() -> None:
    router = CacheAwareRouter(CacheAwareConfig(block_size=BS))
    picks = [router.route(call(str(i), (1, 2, 3)), REPLICAS, float(i)) for i in range(66)]
    assert all(p.replica_id == "a" for p in picks[:65])  # loads (64, 0): spread not > 64
    assert picks[65].replica_id == "b" and picks[65].reason.startswith("imbalanced")
    # one finish on a: loads (64, 1), spread 63, balanced again: back to cache affinity,
    # and the prefix now has two owners (b was taught it); the latest toucher wins.
    router.on_finish(call("0", (1, 2, 3)), "a", 70.0)
    assert router.load("a") == 64 and router.load("b") == 1
    after = router.route(call("66", (1, 2, 3)), REPLICAS, 71.0)
    assert after.replica_id == "b" and after.reason.startswith("cache match")


def test_imbalanced_route_still_teaches_the_tree() -> None:
    router = CacheAwareRouter(CacheAwareConfig(block_size=BS, balance_abs_threshold=0, balance_rel_threshold=1.0))
    router.route(call("1", (1,)), REPLICAS, 0.0)  # a
    sent = router.route(call("2", (5, 6)), REPLICAS, 1.0)  # loads (1, 0): imbalanced
    assert sent.replica_id == "b" and sent.reason.startswith("imbalanced")
    assert router.tree.prefix_match((5, 6), 2.0) == (128, "b")


def test_unhealthy_owner_falls_back_to_first_healthy() -> None:
    router = CacheAwareRouter(CacheAwareConfig(block_size=BS))
    router.route(call("1", (1, 2)), [ReplicaView("a"), ReplicaView("b")], 0.0)
    router.on_finish(call("1", (1, 2)), "a", 0.5)
    down = [ReplicaView("a", healthy=False), ReplicaView("b")]
    decision = router.route(call("2", (1, 2)), down, 1.0)
    assert decision.replica_id == "b" and "unhealthy" in decision.reason


def test_tree_is_evicted_after_the_interval() -> None:
    router = CacheAwareRouter(CacheAwareConfig(block_size=BS, max_tree_size_tokens=BS, eviction_interval_s=10.0))
    router.route(call("1", (1, 2, 3)), REPLICAS, 0.0)
    router.route(call("2", (1, 2, 3)), REPLICAS, 5.0)
    assert router.tree.tenant_tokens("a") == 3 * BS  # interval not reached
    router.route(call("3", (9,)), REPLICAS, 10.0)
    assert router.tree.tenant_tokens("a") == BS
