"""Autoscalers behind one ``Scaler`` protocol: reactive (KPA/HPA) and phase-adaptive.

``ReactiveAutoscaler`` does what Knative's KPA and Kubernetes' HPA do with their defaults:
desired = ceil(observed concurrency / target per replica), averaged over a 60 s stable
window, with a 6 s panic window that scales up at once (and forbids scaling down for a
stable window) when it asks for at least twice the ready replicas; an HPA-style KV
utilisation term ceil(ready x utilisation / target) with a 10% tolerance; scale-down at
most halves the count per tick (KPA's max scale-down rate 2).

``PhaseAdaptiveAutoscaler`` projects each live session of a proactive type ahead: the
next step arrives at its predicted time with its expected width (a fan-out) with the
probability that the session continues, and the session keeps about one call busy for
its expected remaining steps. It provisions for the observed load plus the peak of that
forecast from now to one cold start plus one tick ahead (so replicas are ready when a
fan-out lands; predictions should cover sessions with no call running, which the
observed load already counts), releases
replicas once the forecast and the observed load have stayed below the current count for
``drain_delay_s``, and drains first the replicas that no live session's next call is
expected to reach. With no proactive prediction it is exactly the reactive scaler.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from pythia_server.policy.types import ReplicaView, ScaleDecision, ScaleTick
from pythia_server.profiler.types import END, Prediction

__all__ = ["PhaseAdaptiveAutoscaler", "PhaseConfig", "ReactiveAutoscaler", "ReactiveConfig"]


@dataclass(frozen=True, slots=True)
class ReactiveConfig:
    target_calls_per_replica: float = 16.0  # KPA container-concurrency target
    target_kv_utilisation: float = 0.8  # HPA target
    utilisation_tolerance: float = 0.1  # HPA's default tolerance
    stable_window_s: float = 60.0
    panic_window_s: float = 6.0
    panic_threshold: float = 2.0
    max_scale_down_rate: float = 2.0
    min_replicas: int = 1
    max_replicas: int = 64
    tick_s: float = 2.0

    def __post_init__(self) -> None:
        if self.target_calls_per_replica <= 0 or not 0 < self.target_kv_utilisation <= 1:
            raise ValueError("targets must be positive (utilisation within (0, 1])")
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError("need 1 <= min_replicas <= max_replicas")
        if self.tick_s <= 0 or self.panic_window_s <= 0 or self.stable_window_s < self.panic_window_s:
            raise ValueError("tick and windows must be positive, stable >= panic")


@dataclass(frozen=True, slots=True)
class PhaseConfig:
    cold_start_s: float = 30.0  # a new replica serves this long after it is asked for
    step_s: float = 10.0  # a step's duration when the forecast needs one
    drain_delay_s: float = 10.0  # demand must stay low this long before releasing
    horizon_steps: int = 3  # how many steps ahead a session is projected


def _load(view: ReplicaView) -> int:
    return view.running_requests + view.queued_requests


def _clamp(value: int, config: ReactiveConfig) -> int:
    return max(config.min_replicas, min(config.max_replicas, value))


def _drain(replicas: Sequence[ReplicaView], count: int, reached: dict[str, float]) -> tuple[str, ...]:
    """The ``count`` replicas least expected and least loaded (never one with work queued)."""
    if count <= 0:
        return ()
    idle = [v for v in replicas if v.queued_requests == 0]
    idle.sort(key=lambda v: (reached.get(v.replica_id, 0.0), _load(v), v.replica_id))
    return tuple(v.replica_id for v in idle[:count])


class ReactiveAutoscaler:
    """KPA / HPA thresholds on what is observed now; knows nothing of what comes next."""

    name = "reactive"

    def __init__(self, config: ReactiveConfig | None = None) -> None:
        self.config = config or ReactiveConfig()
        self._samples: deque[tuple[float, int, float]] = deque()  # (now_s, calls, kv utilisation)
        self._panic_until_s = -math.inf

    def observe(self, tick: ScaleTick) -> tuple[float, float, float]:
        """Record the tick; returns (stable mean calls, panic mean calls, stable utilisation)."""
        cfg = self.config
        calls = sum(_load(v) for v in tick.replicas)
        total = sum(v.total_kv_tokens for v in tick.replicas)
        used = sum(v.total_kv_tokens - v.free_kv_tokens for v in tick.replicas)
        self._samples.append((tick.now_s, calls, used / total if total > 0 else 0.0))
        while self._samples and self._samples[0][0] < tick.now_s - cfg.stable_window_s:
            self._samples.popleft()
        stable = [s for s in self._samples]
        panic = [s for s in stable if s[0] >= tick.now_s - cfg.panic_window_s]
        return (sum(s[1] for s in stable) / len(stable), sum(s[1] for s in panic) / len(panic),
                sum(s[2] for s in stable) / len(stable))

    def decide(self, tick: ScaleTick) -> ScaleDecision:
        cfg = self.config
        stable, panic, utilisation = self.observe(tick)
        ready = max(len(tick.replicas), 1)
        current = len(tick.replicas) + tick.starting_replicas
        want_stable = math.ceil(stable / cfg.target_calls_per_replica)
        want_panic = math.ceil(panic / cfg.target_calls_per_replica)
        ratio = utilisation / cfg.target_kv_utilisation
        want_util = math.ceil(ready * ratio) if abs(ratio - 1.0) > cfg.utilisation_tolerance else ready
        desired = max(want_stable, want_util)
        reason = f"stable {stable:.1f} calls -> {want_stable}, kv {utilisation:.2f} -> {want_util}"
        if want_panic >= cfg.panic_threshold * ready:
            self._panic_until_s = tick.now_s + cfg.stable_window_s
        if tick.now_s < self._panic_until_s:
            desired = max(desired, want_panic, current)
            reason = f"panic: {panic:.1f} calls in {cfg.panic_window_s:.0f}s -> {want_panic}; " + reason
        desired = max(desired, math.ceil(current / cfg.max_scale_down_rate))
        target = _clamp(desired, cfg)
        drain = _drain(tick.replicas, current - target, {})
        return ScaleDecision(target, reason, tick.now_s + cfg.tick_s, drain)


class PhaseAdaptiveAutoscaler:
    """Scales to the projected demand of live sessions; reactive where nothing is predicted."""

    name = "phase-adaptive"

    def __init__(self, config: PhaseConfig | None = None, reactive: ReactiveConfig | None = None) -> None:
        self.config = config or PhaseConfig()
        self.reactive = ReactiveAutoscaler(reactive)
        self._low_since_s: float | None = None

    def forecast(self, predictions: Sequence[Prediction], now_s: float, until_s: float) -> float:
        """Peak expected concurrent calls of the predicted sessions over [now_s, until_s]."""
        cfg = self.config
        events: list[tuple[float, float]] = []  # (time, change in expected calls)
        for p in predictions:
            p_end = sum(prob for name, prob in p.next_agents if name == END)
            go = 1.0 - p_end if p.next_agents else 0.0
            if go <= 0.0:
                continue
            start = max(p.next_arrival_s if p.next_arrival_s is not None else now_s, now_s)
            if start > until_s:
                continue
            steps = min(max(p.expected_remaining_steps or 1.0, 1.0), float(cfg.horizon_steps))
            width = max(p.expected_fanout, 1.0)
            events += [(start, go * width), (start + cfg.step_s, go * (1.0 - width))]
            events.append((start + cfg.step_s * steps, -go))
        level = peak = 0.0
        for at_s, change in sorted(events, key=lambda e: (e[0], -e[1])):
            if at_s > until_s:
                break
            level += change
            peak = max(peak, level)
        return peak

    def decide(self, tick: ScaleTick) -> ScaleDecision:
        base = self.reactive.decide(tick)
        predictions = [p for p in tick.predictions if isinstance(p, Prediction) and p.proactive]
        if not predictions:
            self._low_since_s = None
            return ScaleDecision(base.target_replicas, "no proactive session: " + base.reason,
                                 base.next_tick_s, base.drain)
        cfg, rcfg = self.config, self.reactive.config
        now_s = tick.now_s
        current = len(tick.replicas) + tick.starting_replicas
        observed = sum(_load(v) for v in tick.replicas)
        until_s = now_s + cfg.cold_start_s + rcfg.tick_s
        peak = self.forecast(predictions, now_s, until_s)
        per = rcfg.target_calls_per_replica
        want = _clamp(math.ceil((observed + peak) / per), rcfg)
        reason = f"forecast peak {peak:.1f} calls by +{until_s - now_s:.0f}s, observed {observed}"
        if want >= current:
            self._low_since_s = None
            return ScaleDecision(want, reason + (": scale up ahead" if want > current else ": hold"),
                                 now_s + rcfg.tick_s)
        if self._low_since_s is None:
            self._low_since_s = now_s
        if now_s - self._low_since_s < cfg.drain_delay_s:
            return ScaleDecision(current, reason + f": low for {now_s - self._low_since_s:.0f}s, holding",
                                 now_s + rcfg.tick_s)
        reached: dict[str, float] = {}
        sessions = {p.session for p in predictions}
        for session, replica_id in tick.session_replicas:
            if session in sessions:
                reached[replica_id] = reached.get(replica_id, 0.0) + 1.0
        drain = _drain(tick.replicas, current - want, reached)
        target = current - len(drain) if len(drain) < current - want else want
        return ScaleDecision(target, reason + f": release {current - target}, no predicted path needs them",
                             now_s + rcfg.tick_s, drain)
