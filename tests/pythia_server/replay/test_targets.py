"""Issue 6's target rows from runs at the load points; delay scaling; the load-curve plot."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pythia_server.engine.step_time import StepTimeModel
from pythia_server.replay.generators.deep_research import generate_deep_research
from pythia_server.replay.loadpoints import LoadPoint, LoadSearch
from pythia_server.replay.metrics import RunMetrics, ideal_jct_s
from pythia_server.replay.targets import (
    format_targets,
    load_curve_svg,
    mean_metrics,
    scale_delays,
    target_rows,
)


def metrics(policy: str, mean: float, p95: float, ideal: float = 10.0) -> RunMetrics:
    return RunMetrics(policy=policy, replicas=1, sessions=10, requests=50, jct_mean_s=mean, jct_p50_s=mean,
                      jct_p95_s=p95, ideal_jct_mean_s=ideal, jct_over_ideal=mean / ideal, ttft_mean_s=0.1,
                      ttft_p95_s=0.2, e2e_mean_s=1.0, e2e_p95_s=2.0, throughput_tok_s=100.0, sessions_per_s=1.0,
                      cache_hit_rate=0.5, preemptions=0, retractions=0, priority_preemptions=0, replica_s=10.0,
                      busy_replica_s=5.0, makespan_s=10.0, prefetches_sent=0, prefetches_dropped=0, rejected=0)


def found(k: float, rate: float) -> LoadSearch:
    return LoadSearch(k, "found", rate, LoadPoint(rate, 10 * k, 12 * k, 10.0), (rate, rate), 1, "")


def test_rows_read_ratios_against_the_issue_goals() -> None:
    runs = {("sglang", 2.0): metrics("sglang", 50.0, 80.0), ("pythia", 2.0): metrics("pythia", 16.0, 30.0),
            ("autellix", 2.0): metrics("autellix", 30.0, 50.0), ("dynamo-kv", 2.0): metrics("dynamo-kv", 25.0, 40.0),
            ("pythia", 1.0): metrics("pythia", 13.0, 20.0)}
    throughput = {"sglang": found(2.0, 1.0), "pythia": found(2.0, 2.5)}
    rows = target_rows(lambda p, r: runs.get((p, r)), found(5.0, 2.0), found(2.0, 1.0), throughput)
    by = {r["target"]: r for r in rows}
    assert by["heavy: sglang mean / pythia mean"]["achieved"] == pytest.approx(50 / 16)
    assert by["heavy: sglang mean / pythia mean"]["met"] is True
    assert by["heavy: pythia mean x ideal"]["met"] is True  # 1.6 <= 1.67
    assert by["heavy: sglang p95 / pythia p95"]["achieved"] == pytest.approx(80 / 30)
    best = by["heavy: best peer mean / pythia mean"]
    assert best["achieved"] == pytest.approx(25 / 16) and "dynamo-kv" in best["note"]
    assert by["moderate: pythia mean x ideal"]["achieved"] == pytest.approx(1.3)
    assert by["moderate: pythia mean x ideal"]["met"] is False
    assert by["throughput at <= 2x ideal: pythia / sglang"]["achieved"] == pytest.approx(2.5)
    table = format_targets(rows)
    assert "MISSED" in table and "met" in table


def test_missing_heavy_point_gives_rows_without_a_verdict() -> None:
    unreachable = LoadSearch(5.0, "unreachable", None, LoadPoint(1000.0, 30.0, 40.0, 10.0), None, 1,
                             "x ideal 3.00 < 5 at 1000/s")
    rows = target_rows(lambda p, r: None, unreachable, found(2.0, 1.0), {})
    assert all(r["achieved"] is None and r["met"] is None for r in rows)
    assert "3.00 < 5" in rows[0]["note"]
    assert "n/a" in format_targets(rows)


def test_scaled_delays_shrink_the_ideal_but_keep_every_call() -> None:
    requests = generate_deep_research(6, seed=4)
    scaled = scale_delays(requests, 0.1)
    assert [(r.request_id, r.input_length, r.output_length, r.hash_ids) for r in scaled] == \
        [(r.request_id, r.input_length, r.output_length, r.hash_ids) for r in requests]
    for a, b in zip(requests, scaled):
        assert b.dependency_delay_ms == pytest.approx(a.dependency_delay_ms * 0.1)
    step_time = StepTimeModel.load()
    before, after = ideal_jct_s(requests, step_time), ideal_jct_s(scaled, step_time)
    assert all(after[k] < before[k] for k in before)
    assert scale_delays(requests, 1.0) == requests
    with pytest.raises(ValueError):
        scale_delays(requests, 0.0)


def test_mean_over_seeds_and_the_plot_leaves_out_the_ceiling_probe() -> None:
    a, b = metrics("sglang", 10.0, 20.0), replace(metrics("sglang", 30.0, 40.0), preemptions=3)
    mean = mean_metrics([a, b])
    assert mean.jct_mean_s == 20.0 and mean.preemptions == 2 and mean.policy == "sglang"
    curves = {"sglang": [{"rate_per_s": r, "jct_mean_s": 10.0 * r, "jct_p95_s": 1.0, "ideal_jct_mean_s": 10.0}
                         for r in (0.5, 1.0, 1000.0)]}
    svg = load_curve_svg(curves, "t", max_rate=1.0)
    assert svg.startswith("<svg") and "5x ideal" in svg and ">1e+03<" not in svg and "1000" not in svg


def fake_run(task: tuple[str, float]) -> RunMetrics:
    """Module level, so a forked pool can call it: x ideal = rate; 'broken' fails like an engine fault."""
    name, rate = task
    if name == "broken":
        raise RuntimeError("KV reservation failed")
    return metrics(name, 10.0 * rate, 12.0 * rate)


@pytest.mark.parametrize("jobs", [1, 2])
def test_policy_runs_memoise_record_each_run_and_keep_failures_apart(jobs: int) -> None:
    from pythia_server.replay.targets import PolicyRuns

    runs, saved = PolicyRuns(fake_run, jobs), []
    runs.on_run = lambda: saved.append(1)
    runs.batch([("sglang", 1.0), ("pythia", 2.0), ("broken", 1.0)])
    runs.batch([("sglang", 1.0)])  # memoised: not run again
    assert len(saved) == 3 and runs.curve("sglang").evaluations == 1
    assert runs.at("pythia", 2.0).jct_mean_s == 20.0  # type: ignore[union-attr]
    assert runs.at("broken", 1.0) is None and "KV reservation" in runs.failures["broken"]
    assert runs.at("sglang", 3.0) is None
