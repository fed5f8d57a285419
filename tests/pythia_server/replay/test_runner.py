"""The offline replay driver: invariants on every baseline, dependencies, admission, policies driven."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pythia_server.engine.types import EngineConfig
from pythia_server.policy import (
    POLICY_NAMES,
    EngineSettings,
    PolicyBundle,
    RoundRobinRouter,
    make_policy,
)
from pythia_server.replay.bench import workflow_graphs
from pythia_server.replay.generators.deep_research import generate_deep_research
from pythia_server.replay.runner import ReplayConfig, ReplayRunner, peek_prefix_tokens
from pythia_server.replay.workload import WorkloadRequest

SMALL_KV = EngineConfig(max_total_num_tokens=24_000)  # small enough to evict and retract


def _call(rid: str, session: str, agent: str, hash_ids: tuple[int, ...], out: int, *, wait_for: tuple[str, ...] = (),
          delay_ms: float | None = None, ts: float | None = None) -> WorkloadRequest:
    return WorkloadRequest(request_id=rid, session_id=session, workflow_type="wf", agent=agent,
                           timestamp_ms=ts if not wait_for else None, delay_ms=delay_ms if wait_for else None,
                           wait_for=wait_for, input_length=len(hash_ids) * 64, output_length=out,
                           hash_ids=hash_ids, block_size=64)


def _workload(sessions: int = 12, gap_ms: float = 300.0) -> list[WorkloadRequest]:
    """Planner -> 3 searchers -> writer per session; a 10-block role prefix shared by all sessions."""
    role = tuple(range(1, 11))
    out: list[WorkloadRequest] = []
    next_id = 1000
    for s in range(sessions):
        sid = f"s{s}"
        own = tuple(range(next_id, next_id + 20))
        next_id += 20
        out.append(_call(f"{sid}:plan", sid, "planner", role + own, 120, ts=s * gap_ms))
        for k in range(3):
            extra = tuple(range(next_id, next_id + 8))
            next_id += 8
            out.append(_call(f"{sid}:search{k}", sid, "searcher", role + own + extra, 200,
                             wait_for=(f"{sid}:plan",), delay_ms=50.0 * k))
        out.append(_call(f"{sid}:write", sid, "writer", role + own + tuple(range(next_id, next_id + 30)), 300,
                         wait_for=tuple(f"{sid}:search{k}" for k in range(3)), delay_ms=100.0))
        next_id += 30
    return out


class CheckedRunner(ReplayRunner):
    """Checks KV capacity and time order at every engine step."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.step_ends: dict[str, float] = {}
        self.max_cached_over_capacity = 0

    def _on_step(self, replica_id: str, result: object) -> None:
        super()._on_step(replica_id, result)
        load = self.cluster.load(replica_id)
        assert load.cached_tokens + 0 <= load.max_total_num_tokens
        assert load.free_tokens >= 0
        start = result.start_s  # type: ignore[attr-defined]
        assert start >= self.step_ends.get(replica_id, 0.0) - 1e-9, "a replica's steps overlap or go back in time"
        self.step_ends[replica_id] = result.end_s  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_every_baseline_keeps_the_invariants(name: str) -> None:
    requests = _workload()
    bundle = make_policy(name, graphs=workflow_graphs(requests))
    runner = CheckedRunner(requests, bundle, ReplayConfig(replicas=2, engine=SMALL_KV))
    result = runner.run()
    # each request completes exactly once, with the tokens it asked for
    assert sorted(r.request_id for r in result.requests) == sorted(r.request_id for r in requests)
    by_id = {r.request_id: r for r in requests}
    for r in result.requests:
        assert r.prompt_tokens == by_id[r.request_id].input_length
        assert r.output_tokens == by_id[r.request_id].output_length
        assert r.finish_reason == "length"
        assert r.ready_s <= r.first_token_s <= r.finish_s
    generated = sum(runner.cluster.load(rid).generation_tokens_total for rid in runner.replica_ids)
    assert generated == sum(r.output_length for r in requests)  # prefetches generate nothing
    # the virtual clock never goes back: results arrive in finish order
    finishes = [r.finish_s for r in result.requests]
    assert finishes == sorted(finishes)
    assert runner.step_ends  # the step hook really ran
    # sessions: one record each, JCT from first ready to last finish
    assert len(result.sessions) == 12
    for s in result.sessions:
        mine = [r for r in result.requests if r.session == s.session]
        assert s.start_s == min(r.ready_s for r in mine) and s.end_s == max(r.finish_s for r in mine)
        assert s.calls == 5


def test_dependencies_release_calls_after_the_last_one_plus_delay() -> None:
    requests = _workload(sessions=3)
    result = ReplayRunner(requests, make_policy("sglang"), ReplayConfig(replicas=2)).run()
    done = {r.request_id: r for r in result.requests}
    for r in requests:
        if r.wait_for:
            last = max(done[d].finish_s for d in r.wait_for)
            assert done[r.request_id].ready_s == pytest.approx(last + r.dependency_delay_ms / 1000.0)
        else:
            assert done[r.request_id].ready_s == pytest.approx((r.timestamp_ms or 0.0) / 1000.0)


def test_closed_loop_keeps_at_most_c_sessions_live() -> None:
    requests = _workload(sessions=8, gap_ms=0.0)
    result = ReplayRunner(requests, make_policy("sglang"), ReplayConfig(replicas=1, concurrency=2)).run()
    spans = sorted((s.start_s, s.end_s) for s in result.sessions)
    for start, _ in spans:
        live = sum(1 for a, b in spans if a <= start < b)
        assert live <= 2
    # a new session starts exactly when one ends
    ends = sorted(s.end_s for s in result.sessions)
    later_starts = sorted(s.start_s for s in result.sessions)[2:]
    assert all(any(abs(st - e) < 1e-9 for e in ends) for st in later_starts)


def test_round_robin_alternates_and_shared_prefixes_hit() -> None:
    requests = _workload(sessions=4, gap_ms=5000.0)
    result = ReplayRunner(requests, make_policy("sglang"), ReplayConfig(replicas=2)).run()
    order = sorted(result.requests, key=lambda r: (r.ready_s, r.request_id))
    assert {r.replica_id for r in order} == {"r0", "r1"}
    assert all("round" in r.route_reason for r in order[:2])
    # after the first planner call on a replica, the role prompt (10 blocks) is cached there
    writes = [r for r in result.requests if r.agent == "writer"]
    assert all(r.cached_tokens >= 10 * 64 for r in writes)


def test_cache_aware_routing_beats_round_robin_on_hits() -> None:
    requests = _workload(sessions=10, gap_ms=2000.0)
    rr = ReplayRunner(requests, make_policy("sglang"), ReplayConfig(replicas=4)).run()
    ca = ReplayRunner(requests, make_policy("sglang-router"), ReplayConfig(replicas=4)).run()

    def hit(result: object) -> float:
        rs = result.requests  # type: ignore[attr-defined]
        return sum(r.cached_tokens for r in rs) / sum(r.prompt_tokens for r in rs)

    assert hit(ca) > hit(rr)


def test_priority_policy_is_asked_and_sent_to_the_engine() -> None:
    requests = _workload(sessions=4)
    result = ReplayRunner(requests, make_policy("autellix"), ReplayConfig(replicas=1)).run()
    assert all(r.priority is not None for r in result.requests)
    plain = ReplayRunner(requests, make_policy("sglang"), ReplayConfig(replicas=1)).run()
    assert all(r.priority is None for r in plain.requests)


def test_kvflow_prefetches_become_prefill_only_requests() -> None:
    requests = _workload(sessions=6, gap_ms=1000.0)
    bundle = make_policy("kvflow", graphs=workflow_graphs(requests))
    runner = ReplayRunner(requests, bundle, ReplayConfig(replicas=2, engine=SMALL_KV))
    result = runner.run()
    assert result.prefetches_sent + result.prefetches_dropped + result.prefetches_resident > 0
    served = sum(runner.cluster.load(r).requests_total for r in runner.replica_ids)
    assert served == len(requests) + result.prefetches_sent


def test_generated_workload_replays_on_every_replica_count() -> None:
    requests = generate_deep_research(sessions=5, seed=1)
    for replicas in (1, 3):
        result = ReplayRunner(requests, make_policy("dynamo-kv"), ReplayConfig(replicas=replicas)).run()
        assert len(result.requests) == len(requests)


def test_a_runner_runs_once_and_bad_config_is_refused() -> None:
    runner = ReplayRunner(_workload(sessions=1), make_policy("sglang"))
    runner.run()
    with pytest.raises(RuntimeError, match="runs once"):
        runner.run()
    with pytest.raises(ValueError, match="replicas"):
        ReplayConfig(replicas=0)
    with pytest.raises(ValueError, match="concurrency"):
        ReplayConfig(concurrency=0)


def test_a_call_the_engine_refuses_is_recorded_and_the_session_goes_on() -> None:
    calls = _workload(sessions=1)
    too_big = replace(calls[0], input_length=30_000, hash_ids=tuple(range(1, 470)))
    result = ReplayRunner([too_big, *calls[1:]], make_policy("sglang"), ReplayConfig(engine=SMALL_KV)).run()
    assert len(result.requests) == 5 and len(result.rejected) == 1
    assert "does not fit in the KV cache" in result.rejected[0]
    refused = next(r for r in result.requests if r.request_id == too_big.request_id)
    assert refused.finish_reason == "rejected" and refused.output_tokens == 0
    assert all(r.finish_reason == "length" for r in result.requests if r is not refused)


def test_peek_prefix_does_not_change_the_cache() -> None:
    from pythia_server.engine.radix_cache import RadixCache

    cache = RadixCache(1, "lru")
    cache.insert([1, 2, 3, 4, 5])
    before = (cache.total_size, cache.evictable_size)
    assert peek_prefix_tokens(cache, [1, 2, 3, 9]) == 3
    assert peek_prefix_tokens(cache, [1, 2, 3, 4, 5, 6]) == 5
    assert peek_prefix_tokens(cache, [7]) == 0
    assert (cache.total_size, cache.evictable_size) == before
    assert cache.match_prefix([1, 2, 3, 4, 5]).prefix_len == 5  # no split happened behind its back


def test_views_match_the_engine_load() -> None:
    requests = _workload(sessions=8, gap_ms=50.0)
    runner = ReplayRunner(requests, make_policy("sglang"), ReplayConfig(replicas=2, engine=SMALL_KV))
    seen: list[bool] = []
    original = runner.bundle.router.route

    def route(call, views, now_s):  # type: ignore[no-untyped-def]
        for view in views:
            load = runner.cluster.load(view.replica_id)
            seen.append(view.queued_requests == load.num_waiting_reqs
                        and view.free_kv_tokens == load.max_total_num_tokens - load.num_used_tokens
                        and view.total_kv_tokens == load.max_total_num_tokens)
        return original(call, views, now_s)

    runner.bundle.router.route = route  # type: ignore[method-assign]
    runner.run()
    assert seen and all(seen)


def test_a_policy_that_asks_is_told_what_became_of_each_prefetch() -> None:
    requests = _workload(sessions=12, gap_ms=400.0)
    bundle = make_policy("kvflow", graphs=workflow_graphs(requests), router="round_robin")
    told: list[bool] = []
    bundle.cache_hints.on_prefetch_result = lambda action, sent: told.append(sent)  # type: ignore[union-attr]
    result = ReplayRunner(requests, bundle, ReplayConfig(replicas=3, engine=SMALL_KV)).run()
    assert result.prefetches_sent > 0
    assert told.count(True) == result.prefetches_sent
    assert told.count(False) == result.prefetches_dropped + result.prefetches_resident


class _AgeingPriority:
    """Hogs outrank the victim at submission; every second waited is worth 20 points."""

    name = "ageing"

    def priority(self, call, now_s: float) -> int:  # type: ignore[no-untyped-def]
        base = 0 if call.tags.agent == "victim" else 50
        return base + int(20 * max(now_s - call.arrival_s, 0.0))

    def on_finish(self, outcome, now_s: float) -> None:  # type: ignore[no-untyped-def]
        return None


def _starvation(reprioritize_every_s: float | None):  # type: ignore[no-untyped-def]
    requests = [_call("victim", "v", "victim", (1, 2), 100, ts=100.0)]
    requests += [_call(f"hog{i}", f"h{i}", "hog", (10 + 2 * i, 11 + 2 * i), 100, ts=300.0 * i) for i in range(30)]
    bundle = PolicyBundle("ageing", RoundRobinRouter(), priority=_AgeingPriority(),
                          engine=EngineSettings(enable_priority_scheduling=True, priority_preemption=False))
    config = ReplayConfig(replicas=1, engine=EngineConfig(max_running_requests=1),
                          reprioritize_every_s=reprioritize_every_s)
    result = ReplayRunner(requests, bundle, config).run()
    assert len(result.requests) == 31
    return result


def test_waiting_calls_are_re_prioritised_so_ageing_ends_starvation() -> None:
    starved = _starvation(None)
    aged = _starvation(0.5)
    victim = {r.request_id: r for r in starved.requests}["victim"]
    assert victim.finish_s == max(r.finish_s for r in starved.requests)  # asked once: served last
    assert starved.reprioritized == 0
    victim_aged = {r.request_id: r for r in aged.requests}["victim"]
    assert victim_aged.finish_s < victim.finish_s / 2
    assert aged.reprioritized > 0
    assert victim_aged.priority == 0  # the record keeps the priority sent at submission
    assert sum(r.output_tokens for r in aged.requests) == 31 * 100


def test_the_bundles_running_cap_reaches_the_replicas_and_fixed_priorities_are_not_re_asked() -> None:
    class PeakRunner(CheckedRunner):
        peak = 0

        def _on_step(self, replica_id: str, result: object) -> None:
            super()._on_step(replica_id, result)
            self.peak = max(self.peak, self.cluster.load(replica_id).num_running_reqs)

    capped = replace(make_policy("pythia"), engine=EngineSettings(enable_priority_scheduling=True,
                                                                   priority_preemption=False, max_running_requests=2))
    runner = PeakRunner(_workload(4, gap_ms=10.0), capped, ReplayConfig(replicas=1, engine=SMALL_KV))
    assert runner.cluster.engine(runner.replica_ids[0]).config.running_request_cap == 2
    assert not runner.cluster.engine(runner.replica_ids[0]).config.enable_mixed_chunk  # the settings above
    mixed = ReplayRunner(_workload(2), make_policy("pythia"), ReplayConfig())
    assert mixed.cluster.engine(mixed.replica_ids[0]).config.enable_mixed_chunk
    assert runner.reprioritizer is None  # session order: a waiting call's value never changes
    result = runner.run()
    assert len(result.requests) == 20 and runner.peak == 2
    uncapped = ReplayRunner(_workload(4), make_policy("pythia-no-cap"), ReplayConfig(replicas=1, engine=SMALL_KV))
    assert uncapped.cluster.engine(uncapped.replica_ids[0]).config.running_request_cap == SMALL_KV.running_request_cap
    assert ReplayRunner(_workload(2), make_policy("pythia-critical-path"), ReplayConfig()).reprioritizer is not None
