from __future__ import annotations

import pytest

from pythia_server.policy.pythia.placement import LookaheadRouter, PrefixIndex
from pythia_server.policy.types import Router
from tests.pythia_server.policy.pythia.fakes import (
    WORKFLOW,
    ScriptedProfiler,
    call,
    context,
    prediction,
    view,
)

BLOCKS = tuple(range(1, 21))  # 20 blocks = 1,280 tokens


def _router(mode: str = "proactive", bound: int | None = 100, **config: object) -> tuple[LookaheadRouter, ScriptedProfiler]:
    profiler = ScriptedProfiler(modes={WORKFLOW: mode})
    for agent in ("writer", "other"):
        for session in ("s1", "s2", "s3"):
            profiler.calls[(session, agent)] = prediction(bound=bound, work=0.0)
    router = LookaheadRouter(context(profiler, **config))
    assert isinstance(router, Router)
    return router, profiler


def test_prefix_index_matches_per_replica_prefixes() -> None:
    index = PrefixIndex(block_size=64)
    index.insert((1, 2, 3, 4), "r0")
    index.insert((1, 2, 9), "r1")
    assert [index.matched_tokens((1, 2, 3, 4, 5), r) for r in ("r0", "r1", "r2")] == [256, 128, 0]
    assert index.matched_tokens((), "r0") == 0
    small = PrefixIndex(block_size=64, max_blocks=3)
    small.insert((1, 2, 3, 4), "r0")
    assert len(small._blocks) == 3  # bounded: the least recently sent block went


@pytest.mark.parametrize(
    ("free_total", "expected", "reason_start"),
    [
        # r1 has the prefix and room: tiebreak among equally idle replicas picks the hit.
        ({"r0": 100_000, "r1": 100_000}, "r1", "fits"),
        # r1 has the prefix but its KV cannot hold the predicted demand: r0.
        ({"r0": 100_000, "r1": 50}, "r0", "fits"),
        # Nowhere fits: the least overflow (the one with the cached prefix needs less).
        ({"r0": 80, "r1": 80}, "r1", "fits nowhere"),
    ],
)
def test_lookahead_places_by_predicted_kv_demand(free_total, expected, reason_start) -> None:  # type: ignore[no-untyped-def]
    router, _ = _router()
    router.index.insert(BLOCKS, "r1")
    views = [view(r, free=t, total=t) for r, t in free_total.items()]
    decision = router.route(call("c1", blocks=BLOCKS, prompt=1280), views, 1.0)
    assert (decision.replica_id, decision.reason.split(";")[0].split(":")[0]) == (expected, reason_start)


def test_lookahead_prefers_less_predicted_work_over_affinity_outside_the_tie() -> None:
    router, _ = _router()
    views = [view("r0"), view("r1")]
    busy = call("busy", session="s2", agent="other", prompt=64 * 400, blocks=tuple(range(500, 900)))
    assert router.route(busy, views, 0.5).replica_id == "r0"  # r0 now has ~0.6 s of predicted work
    router.index.insert(BLOCKS, "r0")
    decision = router.route(call("c1", blocks=BLOCKS, prompt=1280), views, 1.0)
    assert decision.replica_id == "r1"
    router.on_finish(busy, "r0", 2.0)
    assert router.load("r0")[0] == 0 and router.load("r1")[0] == 1  # busy left r0; c1 is on r1
    assert router.route(call("c2", session="s3", blocks=BLOCKS, prompt=1280), views, 2.0).replica_id == "r0"


def test_weighted_affinity_trades_work_for_prefill_saved() -> None:
    # Weighted: a 1,280-token hit saves 0.032 s of prefill; r0's predicted backlog is larger.
    router, _ = _router(affinity="weighted", affinity_weight=1.0)
    views = [view("r0"), view("r1")]
    router.route(call("busy", session="s2", agent="other", prompt=6400, blocks=(900,)), views, 0.0)
    router.index.insert(BLOCKS, "r0")
    assert router.route(call("c1", blocks=BLOCKS, prompt=1280), views, 1.0).replica_id == "r1"
    # With affinity weighted 100x, the hit wins despite the backlog.
    router, _ = _router(affinity="weighted", affinity_weight=100.0)
    router.route(call("busy", session="s2", agent="other", prompt=6400, blocks=(900,)), views, 0.0)
    router.index.insert(BLOCKS, "r0")
    assert router.route(call("c1", blocks=BLOCKS, prompt=1280), views, 1.0).replica_id == "r0"


@pytest.mark.parametrize(("mode", "config"), [("shadow", {}), ("unknown", {}), ("proactive", {"lookahead": False})])
def test_shadow_or_switched_off_routes_cache_aware_like(mode, config) -> None:  # type: ignore[no-untyped-def]
    router, _ = _router(mode, **config)
    views = [view("r0"), view("r1")]
    router.index.insert(BLOCKS, "r1")
    decision = router.route(call("c1", blocks=BLOCKS, prompt=1280), views, 1.0)
    assert decision.replica_id == "r1" and decision.reason.startswith("reactive: cache match")
    cold = router.route(call("c2", session="s2", blocks=(77, 78), prompt=128), views, 1.0)
    assert cold.replica_id == "r0" and "least loaded" in cold.reason


def test_reactive_balances_when_loads_are_imbalanced() -> None:
    router, _ = _router("shadow")
    views = [view("r0"), view("r1")]
    router.index.insert(BLOCKS, "r0")
    for i in range(70):  # r1 was not up yet
        router.route(call(f"x{i}", session=f"x{i}", blocks=BLOCKS, prompt=1280), views[:1], 1.0)
    decision = router.route(call("c", blocks=BLOCKS, prompt=1280), views, 2.0)
    assert decision.replica_id == "r1" and decision.reason.startswith("imbalanced")


def test_a_planned_warm_counts_as_a_hit_where_it_goes() -> None:
    router, _ = _router()
    router.context.warm_targets[("s1", "writer")] = ("r1", 1280)
    decision = router.route(call("c1", blocks=BLOCKS, prompt=1280), [view("r0"), view("r1")], 1.0)
    assert decision.replica_id == "r1"


def test_unhealthy_replicas_are_skipped_and_empty_lists_refused() -> None:
    router, _ = _router()
    sick = view("r0")
    sick = type(sick)("r0", healthy=False, free_kv_tokens=100_000, total_kv_tokens=100_000)
    router.index.insert(BLOCKS, "r0")
    assert router.route(call("c1", blocks=BLOCKS, prompt=1280), [sick, view("r1")], 1.0).replica_id == "r1"
    with pytest.raises(ValueError, match="no replica"):
        router.route(call("c2"), [], 1.0)
