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
