from __future__ import annotations

import pytest

from pythia_server.policy.baselines.retention import NOT_EXPECTED, node_sort_key
from pythia_server.policy.pythia.cache_manager import (
    ENDED_RANK,
    LIVE_RANK,
    SpeculativeCacheManager,
)
from pythia_server.policy.types import CacheOwner
from tests.pythia_server.policy.pythia.fakes import (
    END,
    ROLE,
    WORKFLOW,
    ScriptedProfiler,
    call,
    context,
    outcome,
    prediction,
    view,
)


def _manager(mode: str = "proactive", next_prediction=None, **config: object):  # type: ignore[no-untyped-def]
    profiler = ScriptedProfiler(modes={WORKFLOW: mode})
    if next_prediction is not None:
        profiler.nexts["s1"] = next_prediction
    manager = SpeculativeCacheManager(context(profiler, **config))
    return manager, profiler


def _finish_one(manager: SpeculativeCacheManager, agent: str = "planner", now_s: float = 10.0):  # type: ignore[no-untyped-def]
    info = call(f"{agent}-1", agent=agent, blocks=ROLE, arrival_s=now_s - 2.0)
    manager.on_start(info, "r0", now_s - 2.0)
    return manager.on_finish(outcome(info, "r0", finished_s=now_s), now_s)


def owner(session: str | None = "s1", agent: str = "writer") -> CacheOwner:
    return CacheOwner(WORKFLOW, session, agent)


def test_retention_ranks_running_live_and_ended_owners() -> None:
    soon = prediction(next_agents=(("writer", 0.9), (END, 0.1)), arrival_s=11.0)
    manager, _ = _manager(next_prediction=soon)
    _finish_one(manager, "planner", 10.0)
    running = call("w", agent="writer", prompt=6400)
    manager.on_start(running, "r0", 10.5)
    assert manager.retention(owner(agent="writer"), 10.5).steps_to_execution == 0  # type: ignore[union-attr]
    manager.on_finish(outcome(running, finished_s=10.8), 10.8)
    next_writer = manager.retention(owner(agent="writer"), 10.8)
    later_planner = manager.retention(owner(agent="planner"), 10.8)
    assert next_writer is not None and later_planner is not None
    assert 1 <= next_writer.steps_to_execution < later_planner.steps_to_execution < LIVE_RANK  # type: ignore[operator]
    assert manager.retention(owner(session="never-seen"), 11.0) is None
    assert manager.retention(owner(session=None), 11.0) is None
    manager.on_session_end("s1", 12.0)
    assert manager.retention(owner(), 12.0).steps_to_execution == ENDED_RANK  # type: ignore[union-attr]
    assert ENDED_RANK > NOT_EXPECTED  # a finished session's tokens go before plain traffic's


def test_eviction_order_drops_ended_sessions_first_and_keeps_live_shared_prefixes() -> None:
    manager, _ = _manager(mode="shadow")
    for session in ("live", "done"):
        info = call(f"{session}-1", session=session)
        manager.on_start(info, "r0", 1.0)
        manager.on_finish(outcome(info, finished_s=2.0), 2.0)
    manager.on_session_end("done", 3.0)
    live, done = CacheOwner(WORKFLOW, "live", "writer"), CacheOwner(WORKFLOW, "done", "writer")
    plain = CacheOwner()
    keys = {
        "done": node_sort_key(manager, [done], last_access=9.0, now_s=4.0),  # most recently used, still first
        "plain": node_sort_key(manager, [plain], last_access=1.0, now_s=4.0),
        "live": node_sort_key(manager, [live], last_access=0.0, now_s=4.0),
        "shared": node_sort_key(manager, [done, live], last_access=0.0, now_s=4.0),
    }
    assert sorted(keys, key=keys.__getitem__) == ["done", "plain", "live", "shared"]
    assert manager.retention(live, 4.0).steps_to_execution == LIVE_RANK  # type: ignore[union-attr]


def test_retention_switched_off_is_plain_lru() -> None:
    manager, _ = _manager(retention=False)
    _finish_one(manager)
    manager.on_session_end("s1", 20.0)
    assert manager.retention(owner(), 20.0) is None


@pytest.mark.parametrize(
    ("mode", "next_agents", "prefix_tokens", "config", "warms"),
    [
        ("proactive", (("searcher", 0.9),), 640, {}, 1),
        ("shadow", (("searcher", 0.9),), 640, {}, 0),  # shadow: reactive default, no warms
        ("proactive", (("searcher", 0.5), ("writer", 0.5)), 640, {}, 0),  # not confident enough
        ("proactive", ((END, 0.95),), 640, {}, 0),  # the session ends
        ("proactive", (("searcher", 0.9),), 128, {}, 0),  # too small to be worth it
        ("proactive", (("searcher", 0.9),), 640, {"warm": False}, 0),  # switched off
    ],
)
def test_warm_planning_table(mode, next_agents, prefix_tokens, config, warms) -> None:  # type: ignore[no-untyped-def]
    nxt = prediction(next_agents=next_agents, arrival_s=30.0, prefix_tokens=prefix_tokens)
    manager, _ = _manager(mode, nxt, **config)
    actions = _finish_one(manager)
    assert len(actions) == warms
    assert manager.counters.planned == warms


def test_a_warm_is_timed_to_the_predicted_arrival_and_aimed_at_the_session_replica() -> None:
    nxt = prediction(next_agents=(("searcher", 0.9),), arrival_s=30.0, prefix_tokens=640)
    manager, _ = _manager(next_prediction=nxt, warm_lead_s=0.5)
    (action,) = _finish_one(manager, now_s=10.0)
    assert action.replica_id == "r0"
    assert action.block_hashes == ROLE and action.prompt_tokens == 640
    assert action.owner == CacheOwner(WORKFLOW, "s1", "searcher")
    assert action.at_s == pytest.approx(30.0 - 640 * 2.5e-5 - 0.5)
    # No predicted arrival: warm now.
    nxt_now = prediction(next_agents=(("searcher", 0.9),), arrival_s=None, prefix_tokens=640)
    manager, _ = _manager(next_prediction=nxt_now)
    (action,) = _finish_one(manager, now_s=10.0)
    assert action.at_s == 10.0


def test_no_warm_while_the_step_still_has_calls_in_flight() -> None:
    nxt = prediction(next_agents=(("writer", 0.9),), arrival_s=30.0, prefix_tokens=640)
    manager, _ = _manager(next_prediction=nxt)
    a, b = call("a", agent="searcher"), call("b", agent="searcher")
    manager.on_start(a, "r0", 1.0)
    manager.on_start(b, "r1", 1.0)
    assert manager.on_finish(outcome(a, "r0"), 2.0) == ()
    assert len(manager.on_finish(outcome(b, "r1"), 3.0)) == 1


def test_warms_need_headroom_and_move_to_a_roomy_replica() -> None:
    nxt = prediction(next_agents=(("searcher", 0.9),), arrival_s=30.0, prefix_tokens=640)
    manager, _ = _manager(next_prediction=nxt)
    manager.context.saw_replicas([view("r0", free=5_000), view("r1", free=60_000), view("r2", free=40_000)])
    (action,) = _finish_one(manager)
    assert action.replica_id == "r1"  # r0 (the session's) is under the 20% headroom
    manager, _ = _manager(next_prediction=nxt)
    manager.context.saw_replicas([view("r0", free=5_000), view("r1", free=100)])
    assert _finish_one(manager) == ()


def test_warm_outcomes_are_counted_hits_and_wasted() -> None:
    nxt = prediction(next_agents=(("searcher", 0.9),), arrival_s=30.0, prefix_tokens=640)
    manager, _ = _manager(next_prediction=nxt)
    (action,) = _finish_one(manager)
    manager.on_prefetch_result(action, sent=True)
    hit = call("s-1", agent="searcher", blocks=ROLE)
    manager.on_start(hit, "r0", 30.0)
    manager.on_finish(outcome(hit, "r0", cached=640, finished_s=31.0), 31.0)
    assert manager.counters.as_dict() == {"planned": 2, "sent": 1, "dropped": 0, "hits": 1, "wasted": 0}
    # The second warm (planned after the hit) is never used: the session ends first.
    manager.on_session_end("s1", 40.0)
    assert manager.counters.wasted == 1
    # A warm whose call is routed elsewhere is wasted too.
    manager, _ = _manager(next_prediction=nxt)
    _finish_one(manager)
    manager.on_start(call("s-2", agent="searcher"), "r1", 30.0)
    assert manager.counters.wasted == 1 and manager.counters.hits == 0


def test_the_last_agents_prefix_is_kept_over_an_agent_due_later() -> None:
    # The session continues (p 0.9) with a searcher; the planner just ran, so its prompt is
    # the shared context the searcher's call extends; the writer runs at some later step.
    nxt = prediction(next_agents=(("searcher", 0.9), (END, 0.1)), arrival_s=12.0)
    manager, _ = _manager(next_prediction=nxt)
    for agent, now_s in (("writer", 5.0), ("planner", 10.0)):
        info = call(f"{agent}-1", agent=agent, prompt=6400, arrival_s=now_s - 1.0)
        manager.on_start(info, "r0", now_s - 1.0)
        manager.on_finish(outcome(info, finished_s=now_s), now_s)
    planner = manager.retention(owner(agent="planner"), 10.5)
    writer = manager.retention(owner(agent="writer"), 10.5)
    assert planner is not None and writer is not None
    assert planner.steps_to_execution < writer.steps_to_execution  # type: ignore[operator]


def test_a_dropped_warm_no_longer_steers_the_router() -> None:
    nxt = prediction(next_agents=(("searcher", 0.9),), arrival_s=30.0, prefix_tokens=640)
    manager, _ = _manager(next_prediction=nxt)
    (action,) = _finish_one(manager)
    assert manager.context.warm_targets[("s1", "searcher")] == ("r0", 640)
    manager.on_prefetch_result(action, sent=False)
    assert ("s1", "searcher") not in manager.context.warm_targets
    assert manager.counters.dropped == 1
