from __future__ import annotations

import pytest

from pythia_server.policy.pythia.autoscale import (
    PhaseAdaptiveAutoscaler,
    PhaseConfig,
    ReactiveAutoscaler,
    ReactiveConfig,
)
from pythia_server.policy.types import Scaler, ScaleTick
from tests.pythia_server.policy.pythia.fakes import END, prediction, view


def _tick(now_s: float, loads: list[int], starting: int = 0, predictions=(), placements=()) -> ScaleTick:  # type: ignore[no-untyped-def]
    replicas = tuple(view(f"r{i}", running=n, free=100_000 - 1000 * n) for i, n in enumerate(loads))
    return ScaleTick(now_s, replicas, starting, tuple(predictions), tuple(placements))


@pytest.mark.parametrize(
    ("loads", "target"),
    [
        ([16, 16], 2),  # at target concurrency: hold
        ([8, 4], 1),  # 12 calls need one replica (halving is allowed)
        ([30, 30, 30, 30], 8),  # 120 calls / 16: panic scale-up
        ([0], 1),  # min replicas
    ],
)
def test_reactive_scales_to_observed_concurrency(loads: list[int], target: int) -> None:
    scaler = ReactiveAutoscaler()
    assert isinstance(scaler, Scaler)
    decision = scaler.decide(_tick(0.0, loads))
    assert decision.target_replicas == target
    assert decision.next_tick_s == 2.0 and decision.reason


def test_reactive_panic_forbids_scaling_down_for_a_stable_window() -> None:
    scaler = ReactiveAutoscaler(ReactiveConfig(max_replicas=10))
    assert scaler.decide(_tick(0.0, [40, 40])).target_replicas == 5
    quiet = scaler.decide(_tick(20.0, [0] * 5))
    assert quiet.target_replicas == 5 and quiet.reason.startswith("panic")
    later = scaler.decide(_tick(70.0, [0] * 5))
    assert later.target_replicas == 3  # halving at most (ceil 5 / 2)
    assert len(later.drain) == 2


def test_phase_adaptive_without_proactive_predictions_is_the_reactive_scaler() -> None:
    ticks = [_tick(t, loads) for t, loads in ((0.0, [40, 40]), (20.0, [0] * 5), (70.0, [0] * 5), (72.0, [1, 0, 0]))]
    reactive, phase = ReactiveAutoscaler(), PhaseAdaptiveAutoscaler()
    shadow = prediction(next_agents=(("searcher", 1.0),), arrival_s=5.0, fanout=32.0)
    shadow = type(shadow)(**{**{n: getattr(shadow, n) for n in shadow.__slots__}, "mode": "shadow"})
    for tick in ticks:
        with_shadow = ScaleTick(tick.now_s, tick.replicas, 0, (shadow,))
        a, b = reactive.decide(tick), phase.decide(with_shadow)
        assert (a.target_replicas, a.drain) == (b.target_replicas, b.drain)
        assert b.reason.startswith("no proactive session")


def test_phase_adaptive_scales_up_before_a_predicted_fan_out_arrives() -> None:
    fan_out = [prediction(session=f"s{i}", next_agents=(("searcher", 1.0),), arrival_s=20.0, fanout=16.0, steps=2.0)
               for i in range(4)]
    reactive, phase = ReactiveAutoscaler(), PhaseAdaptiveAutoscaler(PhaseConfig(cold_start_s=30.0))
    tick = _tick(0.0, [4])
    assert reactive.decide(tick).target_replicas == 1  # nothing observed yet
    decision = phase.decide(_tick(0.0, [4], predictions=fan_out))
    assert decision.target_replicas == 5  # 4 calls running + 64 expected at t=20, 16 per replica
    assert "scale up ahead" in decision.reason
    # Beyond one cold start plus a tick it is too early to pay for replicas.
    late = [prediction(session="s", next_agents=(("searcher", 1.0),), arrival_s=200.0, fanout=64.0)]
    assert PhaseAdaptiveAutoscaler().decide(_tick(0.0, [4], predictions=late)).target_replicas == 1


def test_phase_adaptive_drains_after_the_delay_replicas_no_session_will_reach() -> None:
    ending = [prediction(session="s1", next_agents=(("writer", 0.5), (END, 0.5)), arrival_s=1.0)]
    phase = PhaseAdaptiveAutoscaler(PhaseConfig(drain_delay_s=10.0))
    placements = (("s1", "r0"),)
    first = phase.decide(_tick(0.0, [0, 0, 0], predictions=ending, placements=placements))
    assert first.target_replicas == 3 and "holding" in first.reason
    second = phase.decide(_tick(12.0, [0, 0, 0], predictions=ending, placements=placements))
    assert second.target_replicas == 1
    assert set(second.drain) == {"r1", "r2"}  # r0 holds s1's prefix: its next call goes there


@pytest.mark.parametrize(
    ("arrival_s", "fanout", "p_end", "until_s", "peak"),
    [
        (5.0, 4.0, 0.0, 60.0, 4.0),
        (5.0, 4.0, 0.5, 60.0, 2.0),
        (5.0, 4.0, 1.0, 60.0, 0.0),
        (100.0, 4.0, 0.0, 60.0, 0.0),
        (None, 1.0, 0.0, 60.0, 1.0),
    ],
)
def test_forecast_table(arrival_s, fanout, p_end, until_s, peak) -> None:  # type: ignore[no-untyped-def]
    agents = (("searcher", 1.0 - p_end), (END, p_end)) if p_end < 1.0 else ((END, 1.0),)
    p = prediction(next_agents=agents, arrival_s=arrival_s, fanout=fanout, steps=3.0)
    assert PhaseAdaptiveAutoscaler().forecast([p], 0.0, until_s) == pytest.approx(peak)
