from __future__ import annotations

import random

import pytest

from pythia_sdk.protocol import AgentTags
from pythia_server.policy.baselines import DynamoKvConfig, DynamoKvRouter, softmax_sample
from pythia_server.policy.types import CallInfo, ReplicaView

BS = 64


def call(call_id: str, blocks: int = 4, first: int = 1) -> CallInfo:
    hashes = tuple(range(first, first + blocks))
    return CallInfo(call_id=call_id, tags=AgentTags(), prompt_tokens=blocks * BS, block_hashes=hashes)


def test_cost_is_prefill_blocks_plus_decode_blocks() -> None:
    router = DynamoKvRouter(DynamoKvConfig(block_size=BS))
    cached = ReplicaView("a", cached_prefix_tokens=2 * BS)
    cold = ReplicaView("b")
    # a: 2 uncached blocks to prefill + 4 blocks not yet active = 6; b: 4 + 4 = 8
    assert router.logit(call("1"), cached) == 6.0
    assert router.logit(call("1"), cold) == 8.0
    decision = router.route(call("1"), [cached, cold], 0.0)
    assert decision.replica_id == "a" and "6.00" in decision.reason


def test_routed_requests_load_their_worker_until_finished() -> None:
    router = DynamoKvRouter(DynamoKvConfig(block_size=BS))
    replicas = [ReplicaView("a", cached_prefix_tokens=2 * BS), ReplicaView("b", cached_prefix_tokens=BS)]
    assert router.route(call("1"), replicas, 0.0).replica_id == "a"  # 6 vs 3 + 4 = 7
    assert (router.active_blocks("a"), router.prefill_tokens("a")) == (4, 2 * BS)
    # a now: (128 + 128) / 64 + 4 active + 0 new = 8 > b's 7
    assert router.route(call("2"), replicas, 1.0).replica_id == "b"
    router.on_finish(call("1"), "a", 2.0)
    router.on_finish(call("2"), "b", 2.0)
    assert router.active_blocks("a") == router.prefill_tokens("a") == router.active_blocks("b") == 0


def test_shared_blocks_count_once_and_prefill_completion_frees_prefill_load() -> None:
    router = DynamoKvRouter(DynamoKvConfig(block_size=BS))
    only = [ReplicaView("a")]
    router.route(call("1"), only, 0.0)
    router.route(call("2"), only, 0.0)  # the same four blocks
    assert router.active_blocks("a") == 4 and router.prefill_tokens("a") == 8 * BS
    router.mark_prefill_completed(call("1"), 0.5)
    assert router.prefill_tokens("a") == 4 * BS
    router.on_finish(call("1"), "a", 1.0)
    assert router.active_blocks("a") == 4  # call 2 still holds them


def test_zero_overlap_weight_ignores_prefill() -> None:
    router = DynamoKvRouter(DynamoKvConfig(block_size=BS, overlap_score_weight=0.0))
    assert router.logit(call("1"), ReplicaView("a")) == 4.0


def test_partial_blocks_and_missing_hashes() -> None:
    router = DynamoKvRouter(DynamoKvConfig(block_size=BS))
    odd = CallInfo("o", AgentTags(), prompt_tokens=4 * BS + 10, block_hashes=(1, 2, 3, 4))
    # the 10-token tail is prefilled but is not a block; a 3-block cache match rounds down
    assert router.new_tokens(odd, ReplicaView("a", cached_prefix_tokens=3 * BS + 20)) == BS + 10
    bare = CallInfo("b", AgentTags(), prompt_tokens=2 * BS)  # no hashes: only prefill counts
    assert router.logit(bare, ReplicaView("a")) == 2.0


def test_ties_go_to_the_smaller_cache_then_random() -> None:
    router = DynamoKvRouter(DynamoKvConfig(block_size=BS), rng=random.Random(1))
    full = ReplicaView("a", total_kv_tokens=1000, free_kv_tokens=100)
    empty = ReplicaView("b", total_kv_tokens=1000, free_kv_tokens=900)
    assert router.route(call("1"), [full, empty], 0.0).replica_id == "b"
    rng = random.Random(1)
    equal = [ReplicaView("a"), ReplicaView("b")]
    picks = {
        DynamoKvRouter(DynamoKvConfig(block_size=BS), rng=rng).route(call("1"), equal, 0.0).replica_id
        for _ in range(20)
    }
    assert picks == {"a", "b"}


@pytest.mark.parametrize(
    ("logits", "temperature", "sample", "expected"),
    [
        ([5.0, 3.0, 7.0], 0.0, 0.99, 1),  # temperature 0: the minimum, sample unused
        ([0.0, 1.0], 1.0, 0.70, 0),  # p = (0.731, 0.269)
        ([0.0, 1.0], 1.0, 0.75, 1),
        ([2.0, 2.0], 1.0, 0.49, 0),  # equal logits: uniform
        ([2.0, 2.0], 1.0, 0.51, 1),
    ],
)
def test_softmax_sample_matches_dynamo(logits: list[float], temperature: float, sample: float, expected: int) -> None:
    assert softmax_sample(logits, temperature, sample) == expected


def test_temperature_spreads_choices_with_the_seeded_rng() -> None:
    router = DynamoKvRouter(DynamoKvConfig(block_size=BS, router_temperature=5.0), rng=random.Random(7))
    replicas = [ReplicaView("a", cached_prefix_tokens=BS), ReplicaView("b")]
    picks = [router.route(call(str(i)), replicas, 0.0).replica_id for i in range(40)]
    assert set(picks) == {"a", "b"}
