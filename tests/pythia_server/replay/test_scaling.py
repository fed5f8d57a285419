"""Replica lifecycle in the replay: cold start, drain, cancellation, replica-seconds, a real scaler."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pythia_server.engine.step_time import StepTimeModel
from pythia_server.engine.types import EngineConfig
from pythia_server.policy import make_policy
from pythia_server.policy.pythia.autoscale import ReactiveAutoscaler, ReactiveConfig
from pythia_server.policy.types import ScaleDecision, ScaleTick
from pythia_server.replay.metrics import ideal_jct_s, summarize
from pythia_server.replay.runner import ReplayConfig, ReplayRunner
from pythia_server.replay.scaling import ReplicaFleet, ReplicaSpan, replica_seconds
from pythia_server.replay.workload import WorkloadRequest
from tests.pythia_server.replay.test_runner import _workload


class ScriptedScaler:
    """Targets from a plan of (from_s, target, drain); records every tick it is shown."""

    name = "scripted"

    def __init__(self, plan: list[tuple[float, int, tuple[str, ...]]], tick_s: float = 1.0) -> None:
        self.plan = plan
        self.tick_s = tick_s
        self.ticks: list[ScaleTick] = []
        self._done: set[int] = set()

    def decide(self, tick: ScaleTick) -> ScaleDecision:
        self.ticks.append(tick)
        index = max(i for i, (at_s, _, _) in enumerate(self.plan) if at_s <= tick.now_s)
        _, target, drain = self.plan[index]
        if index in self._done:
            drain = ()  # name each replica to drain once
        self._done.add(index)
        return ScaleDecision(target, f"plan step {index}", tick.now_s + self.tick_s, drain)


def _check_served_once(result, requests: list[WorkloadRequest]) -> None:  # type: ignore[no-untyped-def]
    assert sorted(r.request_id for r in result.requests) == sorted(r.request_id for r in requests)
    by_id = {r.request_id: r for r in requests}
    for r in result.requests:
        assert r.output_tokens == by_id[r.request_id].output_length
        assert r.prompt_tokens == by_id[r.request_id].input_length
        assert r.finish_reason == "length"


def _run(plan: list[tuple[float, int, tuple[str, ...]]], cold_start_s: float = 5.0, sessions: int = 30):  # type: ignore[no-untyped-def]
    requests = _workload(sessions=sessions, gap_ms=700.0)
    scaler = ScriptedScaler(plan)
    bundle = replace(make_policy("sglang"), scaler=scaler)
    result = ReplayRunner(requests, bundle, ReplayConfig(replicas=1, cold_start_s=cold_start_s)).run()
    return requests, scaler, result


def test_fleet_lifecycle_and_spans() -> None:
    fleet = ReplicaFleet(cold_start_s=30.0)
    first = fleet.add_serving(0.0)
    second, ready_s = fleet.launch(10.0)
    assert ready_s == 40.0 and fleet.starting == {second: 40.0} and fleet.up == 2
    assert not fleet.drain(first)  # the last serving replica stays
    assert fleet.ready(second, 40.0) and fleet.serving == [first, second]
    third, _ = fleet.launch(50.0)
    assert fleet.cancel_newest_start(55.0) == third and not fleet.ready(third, 80.0)
    assert fleet.drain(first) and fleet.serving == [second] and fleet.draining == [first]
    assert fleet.revive() == first and fleet.drain(first)
    fleet.remove(first, 70.0)
    spans = {s.replica_id: s for s in fleet.spans()}
    assert spans[first] == ReplicaSpan(first, 0.0, 0.0, 70.0)
    assert spans[second] == ReplicaSpan(second, 10.0, 40.0, None)
    assert spans[third] == ReplicaSpan(third, 50.0, None, 55.0)
    # launch to removal, cold start included, clipped to the window
    assert replica_seconds(fleet.spans(), 0.0, 100.0) == pytest.approx(70.0 + 90.0 + 5.0)
    assert replica_seconds(fleet.spans(), 20.0, 60.0) == pytest.approx(40.0 + 40.0 + 5.0)


def test_scale_up_serves_only_after_the_cold_start_and_drain_empties_before_removal() -> None:
    requests, scaler, result = _run([(0.0, 3, ()), (12.0, 1, ("r1", "r2"))])
    _check_served_once(result, requests)
    spans = {s.replica_id: s for s in result.replica_spans}
    assert set(spans) == {"r0", "r1", "r2"}
    for rid in ("r1", "r2"):
        span = spans[rid]
        assert span.launched_s == 0.0 and span.serving_s == pytest.approx(5.0)
        assert span.removed_s is not None and span.removed_s >= 12.0
        calls = [r for r in result.requests if r.replica_id == rid]
        assert calls, "a launched replica served calls once warm"
        assert all(r.ready_s >= 5.0 for r in calls)  # nothing routed during the cold start
        assert all(r.ready_s < 12.0 for r in calls)  # nothing new once draining
        assert all(r.finish_s <= span.removed_s + 1e-9 for r in calls)  # removed only once empty
    assert spans["r0"].removed_s is None
    assert result.peak_replicas == 3
    # the scaler saw the cold starts as starting, then as serving; never a draining replica
    assert scaler.ticks[0].starting_replicas == 0 and len(scaler.ticks[0].replicas) == 1
    assert any(t.starting_replicas == 2 for t in scaler.ticks if t.now_s < 5.0)
    assert all(len(t.replicas) == 3 for t in scaler.ticks if 5.0 < t.now_s < 12.0)
    assert all({v.replica_id for v in t.replicas} == {"r0"} for t in scaler.ticks if t.now_s > 12.0)
    assert any(t.session_replicas for t in scaler.ticks)
    # replica-seconds: each replica from launch to removal, inside the run's window
    metrics = summarize(result, ideal_jct_s(requests, StepTimeModel.load()))
    start = min(r.ready_s for r in result.requests)
    end = max(r.finish_s for r in result.requests)
    expected = (end - start) + sum(min(spans[r].removed_s, end) - start for r in ("r1", "r2"))  # type: ignore[type-var]
    assert metrics.replica_s == pytest.approx(expected)
    assert metrics.peak_replicas == 3
    assert set(result.busy_s) == {"r0", "r1", "r2"} and result.busy_s["r1"] > 0
    assert [s.target_replicas for s in result.scale_log][:1] == [3]


def test_a_launch_cancelled_before_its_cold_start_never_serves() -> None:
    requests, _, result = _run([(0.0, 3, ()), (2.0, 1, ())], sessions=10)
    _check_served_once(result, requests)
    assert {r.replica_id for r in result.requests} == {"r0"}
    spans = {s.replica_id: s for s in result.replica_spans}
    assert spans["r1"].serving_s is None and spans["r1"].removed_s == pytest.approx(2.0)
    assert spans["r2"].serving_s is None and spans["r2"].removed_s == pytest.approx(2.0)


def test_scaling_up_again_brings_back_a_draining_replica_first() -> None:
    requests, _, result = _run([(0.0, 2, ()), (8.0, 1, ("r1",)), (8.5, 2, ())], cold_start_s=1.0)
    _check_served_once(result, requests)
    spans = {s.replica_id: s for s in result.replica_spans}
    assert set(spans) == {"r0", "r1"}  # r1 revived (still busy at 8.5), no third launch
    assert any(r.replica_id == "r1" and r.ready_s > 8.5 for r in result.requests)


def test_reactive_autoscaler_keeps_the_invariants_under_a_burst() -> None:
    requests = _workload(sessions=40, gap_ms=100.0)
    scaler = ReactiveAutoscaler(ReactiveConfig(target_calls_per_replica=4.0, tick_s=1.0, stable_window_s=6.0,
                                               panic_window_s=2.0, max_replicas=4))
    bundle = replace(make_policy("sglang-router"), scaler=scaler)
    config = ReplayConfig(replicas=1, engine=EngineConfig(max_total_num_tokens=24_000), cold_start_s=2.0)
    result = ReplayRunner(requests, bundle, config).run()
    _check_served_once(result, requests)
    assert 1 < result.peak_replicas <= 4
    assert len({r.replica_id for r in result.requests}) > 1
    for span in result.replica_spans:
        calls = [r for r in result.requests if r.replica_id == span.replica_id]
        if span.serving_s is not None:
            assert all(r.ready_s >= span.serving_s for r in calls)
        if span.removed_s is not None:
            assert all(r.finish_s <= span.removed_s + 1e-9 for r in calls)
