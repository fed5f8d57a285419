from __future__ import annotations

import pytest

from pythia_server.policy import (
    POLICY_NAMES,
    CacheHintPolicy,
    PolicyBundle,
    PriorityPolicy,
    RoundRobinRouter,
    Router,
    make_policy,
    make_router,
)
from pythia_server.policy.baselines import CacheAwareRouter, DynamoKvRouter, WorkflowGraph


def test_every_name_users_type_builds_a_bundle() -> None:
    assert {"sglang", "sglang-router", "autellix", "kvflow", "continuum", "dynamo-kv"} <= set(POLICY_NAMES)
    for name in POLICY_NAMES:
        bundle = make_policy(name)
        assert isinstance(bundle, PolicyBundle) and bundle.name == name and bundle.description
        assert isinstance(bundle.router, Router)
        assert bundle.priority is None or isinstance(bundle.priority, PriorityPolicy)
        assert bundle.cache_hints is None or isinstance(bundle.cache_hints, CacheHintPolicy)
        assert bundle.scaler is None
        if bundle.priority is not None:
            assert bundle.engine.enable_priority_scheduling  # SGLang ignores priority otherwise


@pytest.mark.parametrize(
    ("name", "router_type", "has_priority", "has_hints"),
    [
        ("sglang", RoundRobinRouter, False, False),
        ("sglang-router", CacheAwareRouter, False, False),
        ("dynamo-kv", DynamoKvRouter, False, False),
        ("kvflow", CacheAwareRouter, False, True),
        ("continuum", CacheAwareRouter, True, True),
    ],
)
def test_bundles_hold_what_they_reproduce(name: str, router_type: type, has_priority: bool, has_hints: bool) -> None:
    bundle = make_policy(name)
    assert isinstance(bundle.router, router_type)
    assert (bundle.priority is not None, bundle.cache_hints is not None) == (has_priority, has_hints)


def test_each_call_builds_fresh_state() -> None:
    assert make_policy("sglang-router").router is not make_policy("sglang-router").router


def test_unknown_policy_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="sglang-router"):
        make_policy("vllm")


def test_router_override_and_graphs_reach_the_bundle() -> None:
    graph = WorkflowGraph.chain("w", ["a", "b"])
    bundle = make_policy("kvflow", router="round_robin", graphs=[graph])
    assert isinstance(bundle.router, RoundRobinRouter)
    assert bundle.cache_hints.graphs == {"w": graph}  # type: ignore[union-attr]
    assert isinstance(make_router("dynamo_kv", seed=3), DynamoKvRouter)
