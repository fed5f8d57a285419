"""Queue order, preemption victims and the retraction victim, as SGLang chooses them."""

from __future__ import annotations

from pythia_server.engine.request import Req
from pythia_server.engine.schedule_policy import (
    order_waiting,
    preemption_victims,
    retraction_victim,
)
from pythia_server.engine.types import EngineConfig, GenerateRequest


def make(seq: int, priority: int = 0, prompt: int = 10, max_new: int = 100, out: int = 0, private: int = 0) -> Req:
    req = Req.plan(GenerateRequest(f"r{seq}", list(range(prompt)), max_new, ignore_eos=True), max_new, 0.0, seq, 0,
                   0, text=False, priority=priority)
    req.out, req.private = out, private
    return req


def test_fcfs_keeps_arrival_order_and_lof_puts_long_outputs_first() -> None:
    queue = [make(1, max_new=10), make(2, max_new=500), make(3, max_new=50)]
    assert [r.seq for r in order_waiting(queue, EngineConfig(), lambda r: 0)] == [1, 2, 3]
    assert [r.seq for r in order_waiting(queue, EngineConfig(schedule_policy="lof"), lambda r: 0)] == [2, 3, 1]


def test_lpm_sorts_by_cached_prefix_until_the_queue_is_long() -> None:
    config = EngineConfig(schedule_policy="lpm")
    queue = [make(i) for i in range(5)]
    assert [r.seq for r in order_waiting(queue, config, lambda r: r.seq)] == [4, 3, 2, 1, 0]
    long_queue = [make(i) for i in range(129)]
    assert [r.seq for r in order_waiting(long_queue, config, lambda r: r.seq)] == list(range(129))


def test_priority_order_follows_sglangs_sign_convention() -> None:
    queue = [make(1, priority=1), make(2, priority=9), make(3, priority=9)]
    larger_first = EngineConfig(enable_priority_scheduling=True)
    assert [r.seq for r in order_waiting(queue, larger_first, lambda r: 0)] == [2, 3, 1]
    smaller_first = EngineConfig(enable_priority_scheduling=True, schedule_low_priority_values_first=True)
    assert [r.seq for r in order_waiting(queue, smaller_first, lambda r: 0)] == [1, 2, 3]


def test_preemption_needs_the_threshold_and_takes_the_least_urgent_latest_first() -> None:
    config = EngineConfig(enable_priority_scheduling=True)
    running = [make(1, priority=0, private=100), make(2, priority=0, private=100), make(3, priority=15, private=100)]
    urgent = make(9, priority=20)
    assert [r.seq for r in preemption_victims(urgent, running, 0, True, config, 0.0)] == [2]
    assert [r.seq for r in preemption_victims(urgent, running, 150, False, config, 0.0)] == [2, 1]
    assert preemption_victims(urgent, running, 10_000, False, config, 0.0) == []  # all or nothing
    assert preemption_victims(make(8, priority=10), running, 0, True, config, 0.0) == []  # not > 10 more urgent


def test_retraction_takes_the_fewest_outputs_then_the_longest_prompt() -> None:
    running = [make(1, out=5, prompt=10), make(2, out=1, prompt=10), make(3, out=1, prompt=50)]
    assert retraction_victim(running).seq == 3
