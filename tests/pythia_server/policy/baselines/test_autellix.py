from __future__ import annotations

import pytest

from pythia_sdk.protocol import AgentTags
from pythia_server.policy.baselines import AutellixConfig, AutellixPriority, AutellixRouter
from pythia_server.policy.types import SGLANG_PRIORITY_PREEMPTION_THRESHOLD, CallInfo, CallOutcome, ReplicaView


def call(call_id: str, session: str = "p", arrival_s: float = 0.0, prompt_tokens: int = 100) -> CallInfo:
    return CallInfo(call_id, AgentTags(workflow="w", session=session, agent="x"), prompt_tokens, arrival_s=arrival_s)


def finish(policy: AutellixPriority, c: CallInfo, service_s: float, queue_s: float = 0.0, at_s: float = 0.0) -> None:
    outcome = CallOutcome(c, "r", c.prompt_tokens, 0, 10, queue_s, service_s, at_s)
    policy.on_finish(outcome, at_s)


@pytest.mark.parametrize(
    ("service_s", "queue"),
    [(0.0, 0), (0.99, 0), (1.0, 1), (2.9, 1), (3.0, 2), (7.0, 3), (126.0, 6), (127.0, 7), (1e6, 7)],
)
def test_queue_ranges_are_geometric(service_s: float, queue: int) -> None:
    assert AutellixPriority().queue_of(service_s) == queue


def test_levels_are_sglang_priorities_far_enough_apart_to_preempt() -> None:
    policy = AutellixPriority()
    assert policy.sglang_priority(0) > policy.sglang_priority(1)  # larger is more urgent in SGLang
    assert policy.sglang_priority(0) - policy.sglang_priority(1) > SGLANG_PRIORITY_PREEMPTION_THRESHOLD


def test_plas_demotes_a_program_as_its_attained_service_crosses_thresholds() -> None:
    policy = AutellixPriority(AutellixConfig(mode="plas"))
    first = call("1")
    assert policy.priority(first, 0.0) == 700  # Q1
    finish(policy, first, service_s=1.5)
    second = call("2")
    assert policy.priority(second, 2.0) == 600  # 1.5 s attained: Q2
    finish(policy, second, service_s=2.0)
    assert policy.priority(call("3"), 5.0) == 500  # 3.5 s: Q3
    assert policy.priority(call("4", session="other"), 5.0) == 700  # a fresh program goes first


@pytest.mark.parametrize(("mode", "expected"), [("plas", 500), ("atlas", 600)])
def test_atlas_counts_the_critical_path_not_the_sum(mode: str, expected: int) -> None:
    policy = AutellixPriority(AutellixConfig(mode=mode))
    fan_out = [call("a"), call("b")]
    for c in fan_out:  # both threads start at program service 0
        policy.priority(c, 0.0)
    for c in fan_out:
        finish(policy, c, service_s=2.0)
    # PLAS: 2 + 2 = 4 s -> Q3; ATLAS: max(0 + 2, 0 + 2) = 2 s -> Q2
    assert policy.priority(call("join"), 3.0) == expected


def test_anti_starvation_promotes_after_beta_times_service_of_waiting() -> None:
    policy = AutellixPriority(AutellixConfig(mode="plas", beta=8.0))
    done = call("0")
    policy.priority(done, 0.0)
    finish(policy, done, service_s=10.0)  # 10 s attained: Q4 (7 <= 10 < 15)
    waiting = call("1", arrival_s=100.0)
    assert policy.priority(waiting, 100.0) == 400
    assert policy.priority(waiting, 179.9) == 400  # waited 79.9 s < 8 x 10 s
    assert policy.priority(waiting, 180.0) == 700  # promoted to Q1


def test_program_wait_counts_toward_starvation() -> None:
    policy = AutellixPriority(AutellixConfig(mode="plas", beta=8.0))
    done = call("0")
    policy.priority(done, 0.0)
    finish(policy, done, service_s=10.0, queue_s=60.0)
    assert policy.priority(call("1", arrival_s=100.0), 120.0) == 700  # 60 + 20 >= 80


def test_idle_programs_are_forgotten_after_their_ttl() -> None:
    policy = AutellixPriority(AutellixConfig(mode="plas", program_ttl_s=10.0))
    c = call("0")
    policy.priority(c, 0.0)
    finish(policy, c, service_s=5.0, at_s=0.0)
    finish(policy, call("z", session="other"), service_s=0.1, at_s=11.0)
    assert policy.program_scalar("p") == 0.0


def test_locality_balancer_keeps_long_prompts_on_their_programs_engine() -> None:
    router = AutellixRouter(long_prompt_tokens=2048)
    idle = [ReplicaView("a"), ReplicaView("b")]
    assert router.route(call("1", prompt_tokens=3000), idle, 0.0).replica_id == "a"
    busy_a = [ReplicaView("a", running_requests=5), ReplicaView("b")]
    long_call = router.route(call("2", prompt_tokens=3000), busy_a, 1.0)
    assert long_call.replica_id == "a" and "long prompt" in long_call.reason
    short_call = router.route(call("3", prompt_tokens=2048), busy_a, 2.0)
    assert short_call.replica_id == "b" and short_call.reason == "least used engine"
    assert router.route(call("4", session="new", prompt_tokens=9000), busy_a, 3.0).replica_id == "b"


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="mode"):
        AutellixConfig(mode="lifo")
