"""Ideal JCT (a lower bound computed with the engine's own step times) and run summaries."""

from __future__ import annotations

import pytest

from pythia_server.engine.step_time import StepTimeModel
from pythia_server.engine.types import EngineConfig
from pythia_server.policy import POLICY_NAMES, make_policy
from pythia_server.replay.bench import workflow_graphs
from pythia_server.replay.metrics import call_solo_s, ideal_jct_s, percentile, summarize
from pythia_server.replay.runner import ReplayConfig, ReplayRunner
from tests.pythia_server.replay.test_runner import SMALL_KV, _call, _workload

STEP = StepTimeModel.load()


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 95) == 0.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile(list(map(float, range(1, 101))), 95) == 95.0
    assert percentile([5.0], 95) == 5.0


def test_a_lone_call_on_an_idle_replica_takes_its_ideal_time() -> None:
    request = [_call("a", "s", "x", tuple(range(1, 41)), 300, ts=0.0)]
    ideal = ideal_jct_s(request, STEP)["s"]
    ttft, e2e = call_solo_s(40 * 64, 300, 0, STEP)
    assert ideal == pytest.approx(e2e)
    result = ReplayRunner(request, make_policy("sglang"), ReplayConfig(replicas=1)).run()
    assert result.sessions[0].jct_s == pytest.approx(ideal, rel=0.01)
    assert result.requests[0].ttft_s == pytest.approx(ttft, rel=0.01)


def test_long_prompts_are_prefilled_in_chunks() -> None:
    one_pass = STEP.prefill_s([20_000], [0])
    _, chunked = call_solo_s(20_000, 1, 0, STEP, chunk_tokens=8192)
    assert chunked > one_pass  # three passes, each paying overhead and attention over the prefix
    request = [_call("a", "s", "x", tuple(range(1, 313)), 1, ts=0.0)]  # 19,968 tokens
    result = ReplayRunner(request, make_policy("sglang"), ReplayConfig(replicas=1)).run()
    assert result.sessions[0].jct_s == pytest.approx(ideal_jct_s(request, STEP)["s"], rel=0.01)


def test_a_chain_adds_delays_and_reuses_its_own_prefix() -> None:
    first = _call("a", "s", "x", tuple(range(1, 21)), 50, ts=0.0)
    second = _call("b", "s", "x", tuple(range(1, 31)), 50, wait_for=("a",), delay_ms=2000.0)
    ideal = ideal_jct_s([first, second], STEP)["s"]
    _, e1 = call_solo_s(20 * 64, 50, 0, STEP)
    _, e2 = call_solo_s(30 * 64, 50, 20 * 64, STEP)
    assert ideal == pytest.approx(e1 + 2.0 + e2)


def test_a_fan_out_costs_its_longest_branch() -> None:
    root = _call("p", "s", "plan", (1, 2), 10, ts=0.0)
    short = _call("a", "s", "w", (1, 2, 3), 10, wait_for=("p",), delay_ms=0.0)
    long = _call("b", "s", "w", (1, 2, 4), 900, wait_for=("p",), delay_ms=0.0)
    ideal = ideal_jct_s([root, short, long], STEP)["s"]
    _, e_root = call_solo_s(128, 10, 0, STEP)
    _, e_long = call_solo_s(192, 900, 128, STEP)
    assert ideal == pytest.approx(e_root + e_long)


def test_prefixes_shared_with_other_sessions_count_as_cached() -> None:
    role = tuple(range(1, 31))
    a = _call("a", "s1", "x", role + (100,), 20, ts=0.0)
    b = _call("b", "s2", "x", role + (200,), 20, ts=0.0)
    alone = _call("c", "s3", "x", (300,) + role, 20, ts=0.0)
    ideal = ideal_jct_s([a, b, alone], STEP)
    assert ideal["s1"] == pytest.approx(call_solo_s(31 * 64, 20, 30 * 64, STEP)[1])
    assert ideal["s3"] == pytest.approx(call_solo_s(31 * 64, 20, 0, STEP)[1])
    assert ideal["s1"] < ideal["s3"]


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_no_policy_beats_the_ideal(name: str) -> None:
    requests = _workload(sessions=10, gap_ms=100.0)
    ideal = ideal_jct_s(requests, STEP, SMALL_KV)
    result = ReplayRunner(requests, make_policy(name, graphs=workflow_graphs(requests)),
                          ReplayConfig(replicas=3, engine=SMALL_KV)).run()
    for s in result.sessions:
        assert s.jct_s >= ideal[s.session] * (1 - 1e-6)
    m = summarize(result, ideal)
    assert m.jct_over_ideal >= 1.0
    assert m.ideal_jct_mean_s == pytest.approx(sum(ideal.values()) / len(ideal))


def test_summary_adds_up() -> None:
    requests = _workload(sessions=6, gap_ms=200.0)
    result = ReplayRunner(requests, make_policy("sglang"), ReplayConfig(replicas=2, engine=SMALL_KV)).run()
    m = summarize(result, ideal_jct_s(requests, STEP, SMALL_KV))
    assert m.sessions == 6 and m.requests == 30 and m.replicas == 2
    span = max(r.finish_s for r in result.requests) - min(r.ready_s for r in result.requests)
    assert m.makespan_s == pytest.approx(span)
    assert m.throughput_tok_s == pytest.approx(sum(r.output_length for r in requests) / span)
    prompt = sum(r.input_length for r in requests)
    assert m.cache_hit_rate == pytest.approx(sum(r.cached_tokens for r in result.requests) / prompt)
    assert 0.0 < m.cache_hit_rate < 1.0
    assert m.replica_s == pytest.approx(2 * span)
    assert 0.0 < m.busy_replica_s <= m.replica_s
    assert m.jct_p50_s <= m.jct_p95_s
    assert m.preemptions == m.retractions + m.priority_preemptions
    row = m.as_dict()
    for key in ("policy", "sessions", "jct_mean_s", "jct_p95_s", "ideal_jct_mean_s", "throughput_tok_s",
                "cache_hit_rate", "preemptions"):
        assert key in row


def test_memory_pressure_shows_as_preemptions() -> None:
    requests = _workload(sessions=12, gap_ms=0.0)
    tight = EngineConfig(max_total_num_tokens=9_000)
    result = ReplayRunner(requests, make_policy("sglang"), ReplayConfig(replicas=1, engine=tight)).run()
    m = summarize(result, ideal_jct_s(requests, STEP, tight))
    assert m.preemptions > 0
    assert len(result.requests) == len(requests)
