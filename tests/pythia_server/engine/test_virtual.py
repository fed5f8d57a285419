"""The virtual-clock driver: same results as stepping token by token, invariants, speed path."""

from __future__ import annotations

import random

import pytest

from pythia_server.engine.types import EngineConfig, FinishedRequest, GenerateRequest
from pythia_server.engine.virtual import VirtualCluster


def workload(seed: int, n: int) -> list[tuple[float, GenerateRequest]]:
    rng = random.Random(seed)
    roles = [[rng.randrange(50_000) for _ in range(rng.randrange(200, 1200))] for _ in range(4)]
    out = []
    t = 0.0
    for i in range(n):
        t += rng.expovariate(4.0)
        ids = roles[rng.randrange(4)] + [rng.randrange(50_000) for _ in range(rng.randrange(20, 3000))]
        out.append((t, GenerateRequest(f"r{i}", ids, rng.randrange(0, 400), ignore_eos=rng.random() < 0.5)))
    return out


def replay(max_decode_steps: int, config: EngineConfig, items: list[tuple[float, GenerateRequest]],
           replicas: int = 2) -> tuple[dict[str, FinishedRequest], VirtualCluster]:
    ids = [f"sim-{i}" for i in range(replicas)]
    cluster = VirtualCluster(ids, config, max_decode_steps=max_decode_steps)
    done: dict[str, FinishedRequest] = {}

    def finish(f: FinishedRequest) -> None:
        assert f.rid not in done, "finished twice"
        assert f.finish_s == pytest.approx(cluster.now_s)
        done[f.rid] = f

    for i, (at_s, request) in enumerate(items):
        cluster.call_at(at_s, lambda r=request, k=i: cluster.submit(ids[k % replicas], r, finish))
    cluster.run()
    return done, cluster


def test_runs_of_decode_steps_match_token_by_token_stepping() -> None:
    config = EngineConfig(max_total_num_tokens=60_000, seed=4)
    items = workload(1, 150)
    exact, _ = replay(1, config, items)
    fast, cluster = replay(4096, config, items)
    assert set(exact) == set(fast) == {r.rid for _, r in items}
    for rid, f in exact.items():
        g = fast[rid]
        assert (g.completion_tokens, g.cached_tokens, g.prompt_tokens) == (f.completion_tokens, f.cached_tokens,
                                                                          f.prompt_tokens)
        assert g.finish_s == pytest.approx(f.finish_s, rel=0.02, abs=0.02)
        if f.first_token_s is None:
            assert g.first_token_s is None and f.completion_tokens == 0
        else:
            assert g.first_token_s == pytest.approx(f.first_token_s, rel=0.02, abs=0.02)
    assert cluster.events_processed < sum(f.completion_tokens for f in fast.values())


def test_invariants_under_memory_pressure_and_aborts() -> None:
    config = EngineConfig(max_total_num_tokens=12_000, page_size=16, max_running_requests=24, seed=7)
    items = workload(2, 200)
    ids = ["a", "b", "c"]
    cluster = VirtualCluster(ids, config)
    done: dict[str, FinishedRequest] = {}
    last = [0.0]

    def finish(f: FinishedRequest) -> None:
        assert f.rid not in done
        assert cluster.now_s >= last[0]
        last[0] = cluster.now_s
        done[f.rid] = f
        for rid in ids:
            engine = cluster.engine(rid)
            assert engine.cache.total_size + engine.debug_state()["private"] <= config.max_total_num_tokens

    for i, (at_s, request) in enumerate(items):
        replica = ids[i % 3]
        cluster.call_at(at_s, lambda r=request, rep=replica: cluster.submit(rep, r, finish))
        if i % 10 == 5:
            cluster.call_at(at_s + 0.3, lambda r=request.rid, rep=replica: cluster.abort(rep, r))
    cluster.run()
    assert set(done) == {r.rid for _, r in items}  # everything ends exactly once, aborted or not
    aborted = {rid for rid, f in done.items() if f.finish_reason["type"] == "abort"}
    assert aborted <= {items[i][1].rid for i in range(len(items)) if i % 10 == 5}
    generated = sum(cluster.load(r).generation_tokens_total for r in ids)
    assert generated == sum(f.completion_tokens for f in done.values())
    for rid in ids:
        load = cluster.load(rid)
        assert load.num_running_reqs == load.num_waiting_reqs == load.num_used_tokens == 0
    for _, request in items:
        f = done[request.rid]
        assert f.completion_tokens <= request.max_new_tokens


def test_call_at_orders_driver_events_and_run_until_stops() -> None:
    cluster = VirtualCluster(["x"])
    seen: list[float] = []
    for t in (3.0, 1.0, 2.0):
        cluster.call_at(t, lambda t=t: seen.append(cluster.now_s))
    assert cluster.run(until_s=2.5) == 2.5
    assert seen == [1.0, 2.0]
    cluster.run()
    assert seen == [1.0, 2.0, 3.0]


def test_replicas_can_be_added_and_removed_once_drained() -> None:
    cluster = VirtualCluster(["a"])
    done: list[str] = []
    cluster.add_replica("b")
    cluster.submit("b", GenerateRequest("x", list(range(500)), 20, ignore_eos=True), lambda f: done.append(f.rid))
    with pytest.raises(ValueError, match="drain"):
        cluster.remove_replica("b")
    with pytest.raises(ValueError, match="already exists"):
        cluster.add_replica("a")
    cluster.run()
    assert done == ["x"] and cluster.is_idle("b")
    cluster.remove_replica("b")
    assert cluster.replica_ids == ["a"]
    assert cluster.busy_seconds("a") == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_invariants_across_random_configurations(seed: int) -> None:
    """Every feature at once: each request ends exactly once, KV within capacity, all freed."""
    rng = random.Random(seed)
    config = EngineConfig(
        max_total_num_tokens=rng.choice([6000, 12000, 40000]), page_size=rng.choice([1, 4, 16]),
        chunked_prefill_size=rng.choice([512, 2048, -1]), max_prefill_tokens=rng.choice([2048, 16384]),
        max_running_requests=rng.choice([None, 4, 16]), schedule_policy=rng.choice(["fcfs", "lpm", "lof"]),
        enable_mixed_chunk=rng.random() < 0.5, enable_priority_scheduling=rng.random() < 0.5,
        enable_session_radix_cache=rng.random() < 0.5, radix_eviction_policy=rng.choice(["lru", "lfu", "priority"]),
        seed=seed,
    )
    ids = ["a", "b"]
    cluster = VirtualCluster(ids, config, max_decode_steps=rng.choice([1, 64, 4096]))
    done: dict[str, FinishedRequest] = {}

    def finish(f: FinishedRequest) -> None:
        assert f.rid not in done
        done[f.rid] = f
        for rid in ids:
            state = cluster.engine(rid).debug_state()
            assert state["tree"] + state["private"] <= config.max_total_num_tokens

    roles = [[rng.randrange(1000) for _ in range(rng.randrange(100, 800))] for _ in range(3)]
    t = 0.0
    for i in range(100):
        t += rng.expovariate(5)
        ids_ = (roles[rng.randrange(3)] + [rng.randrange(1000) for _ in range(rng.randrange(1, 2500))])[:5990]
        request = GenerateRequest(f"q{i}", ids_, rng.randrange(0, 300), ignore_eos=rng.random() < 0.5,
                                  priority=rng.choice([None, 0, 5, 50]), session_id=rng.choice([None, "s1", "s2"]))
        replica = ids[i % 2]
        cluster.call_at(t, lambda r=request, rep=replica: cluster.submit(rep, r, finish))
        if rng.random() < 0.1:
            cluster.call_at(t + rng.random(), lambda r=request, rep=replica: cluster.abort(rep, r.rid))
    cluster.run()
    assert len(done) == 100
    for rid in ids:
        engine = cluster.engine(rid)
        assert engine.debug_state()["private"] == 0 and not engine.has_work
        assert engine.cache.protected_size == 0


def test_set_priority_cuts_a_decode_run_so_the_request_preempts_at_once() -> None:
    config = EngineConfig(max_running_requests=1, enable_priority_scheduling=True)
    cluster = VirtualCluster(["a"], config, max_decode_steps=4096)
    done: dict[str, FinishedRequest] = {}

    def keep(finished: FinishedRequest) -> None:
        done[finished.rid] = finished

    cluster.submit("a", GenerateRequest("long", list(range(100, 400)), 2000, ignore_eos=True, priority=5), keep)
    cluster.submit("a", GenerateRequest("queued", list(range(500, 800)), 5, ignore_eos=True, priority=0),
                   keep)
    changed: list[bool] = []
    cluster.call_at(1.0, lambda: changed.append(cluster.set_priority("a", "queued", 50)))
    cluster.call_at(1.0, lambda: changed.append(cluster.set_priority("a", "long", 50)))  # running: refused
    cluster.run()
    assert changed == [True, False]
    first = done["queued"].first_token_s
    assert first is not None and 1.0 < first < 1.1  # not at the end of the long request's run
    assert done["long"].completion_tokens == 2000 and done["long"].retractions == 1
    assert cluster.load("a").preemptions_total == 1
