"""Shadow and proactive: whether a workflow type's predictions may be acted on.

Every finished session is scored before it is learned (next-agent top-1 of the chosen
context model, and whether each call's output stayed under its agent's bound). A type
starts in shadow. It is promoted when the latest ``validation_sessions`` sessions (at
least ``min_validation_sessions``) meet both promotion thresholds. A proactive type is
demoted when the latest ``drift_sessions`` sessions fall below the (lower) demotion
thresholds: the workflow changed. After a demotion the window starts afresh, so the
type must prove itself on sessions of the changed workflow.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from pythia_server.profiler.types import ModeState

PROACTIVE = "proactive"
SHADOW = "shadow"


@dataclass(frozen=True, slots=True)
class SessionScore:
    """One session's validation figures (counts, so windows can be summed)."""

    top1_hits: int
    top1_trials: int
    bound_covered: int
    bound_trials: int


def _rates(scores: list[SessionScore]) -> tuple[float | None, float | None]:
    trials = sum(s.top1_trials for s in scores)
    bound_trials = sum(s.bound_trials for s in scores)
    top1 = sum(s.top1_hits for s in scores) / trials if trials else None
    coverage = sum(s.bound_covered for s in scores) / bound_trials if bound_trials else None
    return top1, coverage


class ModeTracker:
    """Promotion and demotion of one workflow type. Pure: fed scores, returns the state."""

    def __init__(
        self,
        validation_sessions: int,
        min_validation_sessions: int,
        promote_top1: float,
        promote_coverage: float,
        drift_sessions: int,
        demote_top1: float,
        demote_coverage: float,
    ) -> None:
        self._window: deque[SessionScore] = deque(maxlen=max(1, validation_sessions))
        self._totals = [0, 0, 0, 0]  # the window's summed counts, kept as sessions come and go
        self._min = max(1, min_validation_sessions)
        self._promote = (promote_top1, promote_coverage)
        self._drift_sessions = max(1, drift_sessions)
        self._demote = (demote_top1, demote_coverage)
        self.mode = SHADOW
        self.promotions = 0
        self.demotions = 0
        self.reason = "not enough sessions yet"

    def record(self, score: SessionScore) -> str:
        """Add one finished session's score; returns the (possibly changed) mode."""
        window, totals = self._window, self._totals
        if len(window) == window.maxlen:
            old = window[0]
            totals[0] -= old.top1_hits
            totals[1] -= old.top1_trials
            totals[2] -= old.bound_covered
            totals[3] -= old.bound_trials
        window.append(score)
        totals[0] += score.top1_hits
        totals[1] += score.top1_trials
        totals[2] += score.bound_covered
        totals[3] += score.bound_trials
        if self.mode == SHADOW:
            self._maybe_promote()
        else:
            self._maybe_demote()
        return self.mode

    def _maybe_promote(self) -> None:
        if len(self._window) < self._min:
            self.reason = f"{len(self._window)} of {self._min} sessions judged"
            return
        top1, coverage = self._window_rates()
        need_top1, need_coverage = self._promote
        ok_top1 = top1 is not None and top1 >= need_top1
        ok_coverage = coverage is not None and coverage >= need_coverage
        if ok_top1 and ok_coverage:
            self.mode = PROACTIVE
            self.promotions += 1
            self.reason = f"top1 {top1:.2f} >= {need_top1}, coverage {coverage:.2f} >= {need_coverage}"
        else:
            self.reason = f"top1 {_fmt(top1)} (need {need_top1}), coverage {_fmt(coverage)} (need {need_coverage})"

    def _maybe_demote(self) -> None:
        window = self._window
        recent = [window[i] for i in range(max(0, len(window) - self._drift_sessions), len(window))]
        if len(recent) < self._drift_sessions:
            return
        top1, coverage = _rates(recent)
        low_top1, low_coverage = self._demote
        if (top1 is not None and top1 < low_top1) or (coverage is not None and coverage < low_coverage):
            self.mode = SHADOW
            self.demotions += 1
            self.reason = f"drift: last {len(recent)} sessions top1 {_fmt(top1)}, coverage {_fmt(coverage)}"
            self._window.clear()
            self._totals = [0, 0, 0, 0]
        else:
            self.reason = f"last {len(recent)} sessions top1 {_fmt(top1)}, coverage {_fmt(coverage)} (demote below {low_top1}, {low_coverage})"

    def _window_rates(self) -> tuple[float | None, float | None]:
        hits, trials, covered, bound_trials = self._totals
        return (hits / trials if trials else None, covered / bound_trials if bound_trials else None)

    def state(self) -> ModeState:
        top1, coverage = self._window_rates()
        return ModeState(self.mode, len(self._window), top1, coverage, self.promotions, self.demotions, self.reason)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
