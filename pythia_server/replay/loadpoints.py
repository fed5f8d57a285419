"""Load points of a policy: the arrival rate where its mean JCT is k x ideal, and the
highest rate that keeps it within k x ideal.

Issue 6 states its targets at load points of the ``sglang`` baseline (heavy: mean JCT 5x
its ideal; moderate: 2x) and as throughput at equal latency (the highest rate with mean
JCT <= 2x ideal). These functions find such rates for any ``rate -> metrics`` callable by
bracketing (multiplying or dividing the rate by ``factor``) and then bisecting on log rate.

The curve x ideal(rate) is monotone only roughly: with the same arrival seed, Poisson gaps
scale exactly as 1/rate (common random numbers), so a curve is deterministic in the rate,
but discrete effects (a call landing just before or after a fan-out, a KV retraction) make
it jitter. Both searches therefore read *every* point evaluated so far (a :class:`Curve`
memoises them) and keep an explicit bracket invariant, so a non-monotone point can only
move which crossing is found, never break the search:

- :func:`rate_at_ratio` finds the *first* crossing: ``lo`` is the highest evaluated rate
  below the lowest rate at or above ``k``; bisection keeps ``ratio(lo) < k <= ratio(hi)``
  and returns whichever end is closer to ``k`` (in log ratio).
- :func:`max_rate_within` finds the *last* crossing: ``hi`` is the lowest rate of the top
  run of failures (every evaluated rate above it fails too), ``lo`` the highest passing
  rate below it; before bisecting it checks ``confirm`` further rates past the first
  failure, so a dip back under ``k`` is not missed. It returns ``lo`` (a rate that passed).

A finite workload has a ceiling: at an unbounded arrival rate every session starts at
once and the ratio stops growing (the queue drains in a bounded time). A search that
reaches ``max_rate`` without crossing says so (``status="unreachable"`` with the ratio
there) instead of inventing a rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "Curve",
    "LoadPoint",
    "LoadSearch",
    "RunFigures",
    "SearchLimits",
    "max_rate_within",
    "rate_at_ratio",
]


class RunFigures(Protocol):
    """What a search reads from one run (``replay.metrics.RunMetrics`` has it)."""

    @property
    def jct_mean_s(self) -> float: ...

    @property
    def jct_p95_s(self) -> float: ...

    @property
    def ideal_jct_mean_s(self) -> float: ...


@dataclass(frozen=True, slots=True)
class LoadPoint:
    rate_per_s: float
    jct_mean_s: float
    jct_p95_s: float
    ideal_jct_mean_s: float

    @property
    def x_ideal(self) -> float:
        """Mean JCT / mean ideal JCT (inf when the ideal is 0: never within any k)."""
        return self.jct_mean_s / self.ideal_jct_mean_s if self.ideal_jct_mean_s > 0 else math.inf


@dataclass(frozen=True, slots=True)
class LoadSearch:
    """The outcome of one search. ``status``: ``found``; ``unreachable`` (x ideal stayed
    below k up to the highest rate tried: the ceiling; for :func:`max_rate_within` the rate
    is then that highest rate, a lower bound); ``saturated`` (above k down to the lowest
    rate tried: no rate)."""

    target_x_ideal: float
    status: str
    rate_per_s: float | None
    point: LoadPoint | None  # the run at rate_per_s, or the closest evaluated one
    bracket: tuple[float, float] | None  # (lo, hi) rates at the end of the search
    evaluations: int  # new runs this search caused (memoised runs are free)
    reason: str


def _key(rate: float) -> float:
    return float(f"{rate:.6g}")


class Curve:
    """Memoised ``rate -> LoadPoint`` of one policy on one workload.

    ``run(rate)`` returns any object with :class:`RunFigures`; the curve keeps every point
    so later searches (and a JCT-vs-load plot) reuse them.
    """

    def __init__(self, run: Callable[[float], RunFigures]) -> None:
        self._run = run
        self._points: dict[float, LoadPoint] = {}
        self._figures: dict[float, RunFigures] = {}
        self.evaluations = 0
        self.on_record: Callable[[], None] | None = None  # called after each new point (e.g. to save it)

    def __call__(self, rate_per_s: float) -> LoadPoint:
        if not rate_per_s > 0:
            raise ValueError(f"rate must be positive, got {rate_per_s}")
        key = _key(rate_per_s)
        if key in self._points:
            return self._points[key]
        return self.record(key, self._run(key))

    def has(self, rate_per_s: float) -> bool:
        return _key(rate_per_s) in self._points

    def record(self, rate_per_s: float, figures: RunFigures) -> LoadPoint:
        """Add a run made elsewhere (e.g. in a worker process); it counts as an evaluation."""
        key = _key(rate_per_s)
        if key not in self._points:
            self.evaluations += 1
            self._figures[key] = figures
            self._points[key] = LoadPoint(key, figures.jct_mean_s, figures.jct_p95_s, figures.ideal_jct_mean_s)
            if self.on_record is not None:
                self.on_record()
        return self._points[key]

    def figures(self, rate_per_s: float) -> RunFigures:
        """The full run behind a point (evaluating it if needed)."""
        self(rate_per_s)
        return self._figures[_key(rate_per_s)]

    def points(self) -> list[LoadPoint]:
        return [self._points[r] for r in sorted(self._points)]


@dataclass(frozen=True, slots=True)
class SearchLimits:
    """How far and how finely a search goes: bracketing multiplies or divides the rate by
    ``factor`` within [``min_rate``, ``max_rate``]; bisection stops when hi / lo <= 1 +
    ``rate_tol`` (or, for :func:`rate_at_ratio`, an end is within ``ratio_tol`` of k);
    at most ``max_evals`` new runs per search."""

    factor: float = 2.0
    min_rate: float = 1e-4
    max_rate: float = 1e3
    rate_tol: float = 0.05
    ratio_tol: float = 0.03
    max_evals: int = 14


def _closest(points: list[LoadPoint], k: float) -> LoadPoint | None:
    return min(points, key=lambda p: abs(math.log(max(p.x_ideal, 1e-12) / k)), default=None)


def _step_out(curve: Curve, up: bool, limits: SearchLimits) -> bool:
    """Evaluate one rate beyond the evaluated range (above or below); False at the limit."""
    points = curve.points()
    if up:
        top = points[-1].rate_per_s
        if top >= limits.max_rate:
            return False
        curve(min(top * limits.factor, limits.max_rate))
    else:
        bottom = points[0].rate_per_s
        if bottom <= limits.min_rate:
            return False
        curve(max(bottom / limits.factor, limits.min_rate))
    return True


def _found(k: float, rate: LoadPoint, lo: LoadPoint, hi: LoadPoint, used: int) -> LoadSearch:
    return LoadSearch(k, "found", rate.rate_per_s, rate, (lo.rate_per_s, hi.rate_per_s), used,
                      f"x ideal {lo.x_ideal:.2f} at {lo.rate_per_s:g}/s, {hi.x_ideal:.2f} at {hi.rate_per_s:g}/s")


def rate_at_ratio(curve: Curve, k: float, start_rate: float, limits: SearchLimits = SearchLimits()) -> LoadSearch:
    """The lowest rate where ``x_ideal`` crosses ``k``, or why there is none."""
    before = curve.evaluations
    curve(start_rate)

    def bracket() -> tuple[LoadPoint | None, LoadPoint | None]:
        pts = curve.points()
        hi = next((p for p in pts if p.x_ideal >= k), None)
        below = [p for p in pts if hi is None or p.rate_per_s < hi.rate_per_s]
        return (below[-1] if below else None), hi

    lo, hi = bracket()
    while (hi is None or lo is None) and curve.evaluations - before < limits.max_evals:
        if not _step_out(curve, hi is None, limits):  # all below k: go up; lowest already above: go down
            break
        lo, hi = bracket()
    used = curve.evaluations - before
    if hi is None:
        top = curve.points()[-1]
        return LoadSearch(k, "unreachable", None, top, None, used,
                          f"x ideal {top.x_ideal:.2f} < {k:g} at {top.rate_per_s:g}/s, the highest rate tried")
    if lo is None:
        bottom = curve.points()[0]
        return LoadSearch(k, "saturated", None, bottom, None, used,
                          f"x ideal {bottom.x_ideal:.2f} >= {k:g} already at {bottom.rate_per_s:g}/s")
    while (hi.rate_per_s / lo.rate_per_s > 1 + limits.rate_tol and abs(hi.x_ideal / k - 1) > limits.ratio_tol
           and abs(lo.x_ideal / k - 1) > limits.ratio_tol and curve.evaluations - before < limits.max_evals):
        mid = curve(math.sqrt(lo.rate_per_s * hi.rate_per_s))
        if mid.rate_per_s in (lo.rate_per_s, hi.rate_per_s):
            break
        lo, hi = (mid, hi) if mid.x_ideal < k else (lo, mid)
    best = _closest([lo, hi], k)
    assert best is not None
    return _found(k, best, lo, hi, curve.evaluations - before)


def max_rate_within(
    curve: Curve, k: float, start_rate: float, limits: SearchLimits = SearchLimits(), confirm: int = 1
) -> LoadSearch:
    """The highest rate with ``x_ideal <= k``, checked ``confirm`` rates past the first
    failure; ``unreachable`` when no rate up to ``limits.max_rate`` fails (the rate
    returned is then the highest tried, a lower bound)."""
    before = curve.evaluations
    curve(start_rate)

    def bracket() -> tuple[LoadPoint | None, LoadPoint | None]:
        pts = curve.points()
        hi = None
        for p in reversed(pts):  # the top run of failures
            if p.x_ideal <= k:
                break
            hi = p
        below = [p for p in pts if hi is None or p.rate_per_s < hi.rate_per_s]
        return (below[-1] if below else None), hi

    def confirmed(hi: LoadPoint) -> bool:
        higher = [p for p in curve.points() if p.rate_per_s > hi.rate_per_s]
        return len(higher) >= confirm or hi.rate_per_s >= limits.max_rate

    lo, hi = bracket()
    while curve.evaluations - before < limits.max_evals:
        if hi is not None and lo is not None and confirmed(hi):
            break
        # nothing fails yet, or the failure is unconfirmed: go up; everything fails: go down
        if not _step_out(curve, hi is None or lo is not None, limits):
            break
        lo, hi = bracket()
    used = curve.evaluations - before
    if hi is None:
        top = curve.points()[-1]
        return LoadSearch(k, "unreachable", top.rate_per_s, top, None, used,
                          f"x ideal {top.x_ideal:.2f} <= {k:g} up to {top.rate_per_s:g}/s: a lower bound")
    if lo is None:
        bottom = curve.points()[0]
        return LoadSearch(k, "saturated", None, bottom, None, used,
                          f"x ideal {bottom.x_ideal:.2f} > {k:g} already at {bottom.rate_per_s:g}/s")
    while hi.rate_per_s / lo.rate_per_s > 1 + limits.rate_tol and curve.evaluations - before < limits.max_evals:
        mid = curve(math.sqrt(lo.rate_per_s * hi.rate_per_s))
        if mid.rate_per_s in (lo.rate_per_s, hi.rate_per_s):
            break
        lo, hi = (mid, hi) if mid.x_ideal <= k else (lo, mid)
    return _found(k, lo, lo, hi, curve.evaluations - before)
