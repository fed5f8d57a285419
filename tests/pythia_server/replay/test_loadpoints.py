"""Load-point searches: monotone, noisy and capped curves, and one small real replay."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from pythia_server.engine.step_time import StepTimeModel
from pythia_server.engine.types import EngineConfig
from pythia_server.replay.arrivals import PoissonArrivals, apply_arrivals
from pythia_server.replay.bench import BenchSettings, run_policy
from pythia_server.replay.generators.deep_research import generate_deep_research
from pythia_server.replay.loadpoints import (
    Curve,
    SearchLimits,
    max_rate_within,
    rate_at_ratio,
)
from pythia_server.replay.metrics import ideal_jct_s


@dataclass(frozen=True)
class Figures:
    jct_mean_s: float
    jct_p95_s: float
    ideal_jct_mean_s: float


def curve_of(ratio_at: dict[float, float] | None = None, fn=None) -> Curve:  # type: ignore[no-untyped-def]
    """A curve whose x ideal at rate r is fn(r) (ideal 10 s)."""

    def run(rate: float) -> Figures:
        x = fn(rate) if fn is not None else ratio_at[rate]  # type: ignore[index]
        return Figures(10.0 * x, 12.0 * x, 10.0)

    return Curve(run)


def queue(rate: float) -> float:
    """M/M/1-like growth of x ideal, capacity 4/s, plus a finite-workload ceiling of 20."""
    return min(1.0 + rate / max(4.0 - rate, 0.2), 20.0)


def test_monotone_curve_finds_the_crossing_within_tolerance() -> None:
    # x ideal = 1 + r / (4 - r): 5x at r = 3.2, 2x at r = 2
    for k, exact in ((5.0, 3.2), (2.0, 2.0)):
        search = rate_at_ratio(curve_of(fn=queue), k, 0.1, SearchLimits(rate_tol=0.01, ratio_tol=0.005))
        assert search.status == "found"
        assert search.rate_per_s == pytest.approx(exact, rel=0.02)
        lo, hi = search.bracket  # type: ignore[misc]
        assert queue(lo) < k <= queue(hi)


def test_search_goes_down_when_the_start_is_already_above() -> None:
    search = rate_at_ratio(curve_of(fn=queue), 2.0, 3.9, SearchLimits(rate_tol=0.01, ratio_tol=0.005))
    assert search.status == "found"
    assert search.rate_per_s == pytest.approx(2.0, rel=0.02)


def test_a_ceiling_below_k_is_reported_not_invented() -> None:
    capped = curve_of(fn=lambda r: min(queue(r), 3.5))  # a small finite workload: never 5x
    search = rate_at_ratio(capped, 5.0, 0.5, SearchLimits(max_rate=64.0))
    assert search.status == "unreachable"
    assert search.rate_per_s is None
    assert search.point is not None and search.point.rate_per_s == 64.0
    assert "3.50" in search.reason


def test_saturated_at_the_lowest_rate_gives_no_rate() -> None:
    search = rate_at_ratio(curve_of(fn=lambda r: 9.0), 5.0, 1.0, SearchLimits(min_rate=0.01))
    assert search.status == "saturated" and search.rate_per_s is None


def test_throughput_search_returns_a_passing_rate_next_to_the_last_crossing() -> None:
    search = max_rate_within(curve_of(fn=queue), 2.0, 0.3, SearchLimits(rate_tol=0.01))
    assert search.status == "found"
    assert search.point is not None and search.point.x_ideal <= 2.0
    assert search.rate_per_s == pytest.approx(2.0, rel=0.02)
    assert search.rate_per_s <= 2.0


def test_non_monotone_dip_past_the_first_failure_is_found() -> None:
    # fails at 1/s (a spike), passes again until 3/s: throughput is the last crossing
    def bumpy(rate: float) -> float:
        if 0.9 <= rate <= 1.1:
            return 2.4
        return 1.0 + rate / 3.0

    first = rate_at_ratio(curve_of(fn=bumpy), 2.0, 0.5, SearchLimits(rate_tol=0.01, ratio_tol=0.001))
    assert first.status == "found" and first.rate_per_s is not None and first.rate_per_s < 1.2
    last = max_rate_within(curve_of(fn=bumpy), 2.0, 0.5, SearchLimits(rate_tol=0.01), confirm=2)
    assert last.status == "found"
    assert last.rate_per_s == pytest.approx(3.0, rel=0.02)


def test_noisy_curve_keeps_the_bracket_invariant() -> None:
    # deterministic jitter of +-8% on a monotone curve, as the replay's discrete effects give
    def noisy(rate: float) -> float:
        return queue(rate) * (1.0 + 0.08 * math.sin(37.0 * rate))

    curve = curve_of(fn=noisy)
    search = rate_at_ratio(curve, 5.0, 0.2, SearchLimits(rate_tol=0.005, ratio_tol=0.001))
    assert search.status == "found"
    lo, hi = search.bracket  # type: ignore[misc]
    assert noisy(lo) < 5.0 <= noisy(hi)
    assert hi / lo <= 1.005 + 1e-9 or abs(search.point.x_ideal / 5.0 - 1) <= 0.001  # type: ignore[union-attr]
    # every evaluated point below lo's rate... the first crossing: nothing below lo reached 5x
    assert all(p.x_ideal < 5.0 for p in curve.points() if p.rate_per_s <= lo)


def test_throughput_never_exceeded_is_a_lower_bound() -> None:
    search = max_rate_within(curve_of(fn=lambda r: 1.5), 2.0, 1.0, SearchLimits(max_rate=16.0))
    assert search.status == "unreachable"
    assert search.rate_per_s == 16.0


def test_curve_memoises_runs() -> None:
    calls: list[float] = []

    def run(rate: float) -> Figures:
        calls.append(rate)
        return Figures(20.0, 30.0, 10.0)

    curve = Curve(run)
    curve(1.0)
    curve(1.0000000001)
    assert calls == [1.0] and curve.evaluations == 1
    assert curve.points()[0].x_ideal == 2.0
    with pytest.raises(ValueError):
        curve(0.0)


def test_real_replay_calibrates_sglang_on_a_small_fan_out() -> None:
    """Twenty generated deep-research runs on one replica: 1.5x ideal is found; 2x is above
    this small workload's ceiling (about 1.9x with every run started at once)."""
    requests = generate_deep_research(20, seed=5)
    step_time = StepTimeModel.load()
    engine = EngineConfig.from_gpu()
    ideal = ideal_jct_s(requests, step_time, engine)
    settings = BenchSettings(replicas=1, engine=engine)

    def run(rate: float):  # type: ignore[no-untyped-def]
        timed = apply_arrivals(requests, PoissonArrivals(rate, 1))
        return run_policy("sglang", timed, settings, step_time, ideal)

    curve = Curve(run)
    search = rate_at_ratio(curve, 1.5, 0.05, SearchLimits(ratio_tol=0.05, rate_tol=0.1, max_evals=10))
    assert search.status == "found", search.reason
    lo, hi = search.bracket  # type: ignore[misc]
    assert 1.0 <= curve(lo).x_ideal < 1.5 <= curve(hi).x_ideal  # no policy beats the ideal
    throughput = max_rate_within(curve, 1.5, search.rate_per_s or 0.05, SearchLimits(max_evals=10))
    assert throughput.status == "found"
    assert throughput.point is not None and throughput.point.x_ideal <= 1.5
    ceiling = rate_at_ratio(curve, 2.0, hi, SearchLimits(max_rate=100.0, max_evals=10))
    assert ceiling.status == "unreachable" and ceiling.rate_per_s is None
