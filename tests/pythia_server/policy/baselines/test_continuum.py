from __future__ import annotations

import math

import pytest

from pythia_sdk.protocol import AgentTags
from pythia_server.policy.baselines import (
    ContinuumCacheHints,
    ContinuumConfig,
    ProgramFcfsPriority,
    choose_ttl,
    cold_start_ttl,
    memoryfulness,
)
from pythia_server.policy.types import CacheOwner, CallInfo, CallOutcome

OWNER = CacheOwner("swe", "s", "agent")


def call(call_id: str, session: str = "s", arrival_s: float = 0.0, agent: str = "agent") -> CallInfo:
    return CallInfo(call_id, AgentTags(workflow="swe", session=session, agent=agent), 1000, arrival_s=arrival_s)


def done(c: CallInfo, at_s: float, tool: bool | None = True, queue_s: float = 0.5, context: int = 1000) -> CallOutcome:
    return CallOutcome(c, "r0", context, 0, 0, queue_s, 2.0, at_s, ends_with_tool_call=tool)


@pytest.mark.parametrize(
    ("durations", "benefit", "expected"),
    [
        ([1.0, 4.0], 3.0, 1.0),  # tau 1: 0.5 * 3 - 1 = 0.5 beats tau 4: 3 - 4 and tau 0: 0
        ([1.0, 1.0, 1.0, 1.0, 100.0], 10.0, 1.0),  # covering the tail costs more than it saves
        ([1.0, 1.0, 1.0, 1.0, 100.0], 1000.0, 100.0),  # a large saving covers everything
        ([1.0, 2.0, 3.0], 0.5, 0.0),  # nothing pays: no pin
        ([0.0, 0.0, 5.0], 6.0, 0.0),  # tau 0 already covers the zeros; ties keep the smallest
        ([], 10.0, 0.0),
    ],
)
def test_eq2_ttl(durations: list[float], benefit: float, expected: float) -> None:
    assert choose_ttl(durations, benefit) == expected


@pytest.mark.parametrize(("benefit", "expected"), [(3.0, math.log(3.0)), (1.0, 0.0), (0.2, 0.0)])
def test_cold_start_is_the_exp1_optimum(benefit: float, expected: float) -> None:
    assert cold_start_ttl(benefit) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("pairs", "eta"),
    [
        ([(1, 2), (2, 1), (3, 0)], 1.0),  # turns left fall as turns done rise: fully "memoryful"
        ([(1, 1)], 1.0),  # undefined: 1
        ([(1, 5), (2, 5), (1, 0), (2, 0)], 0.0),  # progress says nothing about what is left
    ],
)
def test_memoryfulness(pairs: list[tuple[int, int]], eta: float) -> None:
    assert memoryfulness(pairs) == pytest.approx(eta)


def test_cold_start_pin_lasts_ln_benefit_and_then_lapses() -> None:
    hints = ContinuumCacheHints(ContinuumConfig(prefill_s_per_token=1e-3))
    first = call("1")
    hints.on_start(first, "r0", 0.0)
    hints.on_finish(done(first, 10.0, context=3000), 10.0)  # B = 3000 x 1e-3 = 3 s
    ttl = math.log(3.0)
    assert hints.retention(OWNER, 10.0 + ttl - 0.01).pinned_at(10.0 + ttl - 0.01)
    assert hints.retention(OWNER, 10.0 + ttl) is None
    assert hints.retention(CacheOwner("swe", "other", "agent"), 10.5) is None


def test_next_turn_unpins_and_records_the_tool_duration() -> None:
    hints = ContinuumCacheHints(ContinuumConfig(prefill_s_per_token=1e-3))
    first = call("1")
    hints.on_start(first, "r0", 0.0)
    hints.on_finish(done(first, 2.0, context=3000), 2.0)
    assert hints.retention(OWNER, 2.1) is not None
    hints.on_start(call("2", arrival_s=6.0), "r0", 6.0)
    assert hints.retention(OWNER, 6.0) is None  # running: the lock protects it, no pin
    assert hints.durations() == [4.0] and hints.durations("swe", "agent") == [4.0]


def test_empirical_cdf_after_the_history_threshold_per_tool_when_it_has_enough() -> None:
    hints = ContinuumCacheHints(ContinuumConfig(prefill_s_per_token=1e-3, history_threshold=3))
    t = 0.0
    for i in range(5):  # five 4-second tool calls by "agent"
        c = call(str(i), arrival_s=t)
        hints.on_start(c, "r0", t)
        t += 1.0
        hints.on_finish(done(c, t, context=10_000), t)  # B = 10 s
        t += 4.0
    # more than 3 durations in all and for this tool: Eq. 2 on [4, 4, 4, 4] -> 4 s
    assert hints.ttl_for(done(call("x"), t, context=10_000)) == 4.0
    # a tool with little history falls back to the global CDF
    assert hints.ttl_for(done(call("y", agent="other"), t, context=10_000)) == 4.0
    # a small saving does not pay for 4 s
    assert hints.ttl_for(done(call("z"), t, context=1000)) == 0.0


def test_queueing_of_unretained_follow_ups_and_eta_feed_the_benefit() -> None:
    hints = ContinuumCacheHints(ContinuumConfig(prefill_s_per_token=0.0))
    first = call("1")
    hints.on_start(first, "r0", 0.0)
    hints.on_finish(done(first, 1.0), 1.0)  # B = 0: no pin
    second = call("2", arrival_s=5.0)
    hints.on_start(second, "r0", 5.0)  # a follow-up with nothing retained
    hints.on_finish(done(second, 9.0, tool=False, queue_s=3.0), 9.0)
    assert hints.mean_evicted_queue_s == 3.0
    hints.on_session_end("s", 9.0)
    assert hints.eta == 1.0
    assert hints.ttl_for(done(call("3", session="t"), 10.0)) == pytest.approx(math.log(3.0))


def test_fixed_rule_of_the_public_fork() -> None:
    hints = ContinuumCacheHints(ContinuumConfig(ttl_rule="fixed"))
    first = call("1")
    hints.on_start(first, "r0", 0.0)
    hints.on_finish(done(first, 1.0), 1.0)
    assert hints.retention(OWNER, 2.9).pinned_until_s == 3.0  # unknown tool: 2 s
    hints.on_start(call("2", arrival_s=11.0), "r0", 11.0)  # the tool took 10 s
    hints.on_finish(done(call("2"), 12.0), 12.0)
    assert hints.retention(OWNER, 12.5) is None  # mean 10 s > 2 s: no pin


def test_no_pin_without_a_tool_call_or_after_session_end() -> None:
    hints = ContinuumCacheHints(ContinuumConfig(prefill_s_per_token=1e-3))
    c = call("1")
    hints.on_start(c, "r0", 0.0)
    hints.on_finish(done(c, 1.0, tool=False, context=5000), 1.0)
    assert hints.retention(OWNER, 1.5) is None
    hints.on_start(call("2"), "r0", 2.0)
    hints.on_finish(done(call("2"), 3.0, context=5000), 3.0)
    assert hints.retention(OWNER, 3.1) is not None
    hints.on_session_end("s", 3.2)
    assert hints.retention(OWNER, 3.3) is None


def test_program_fcfs_puts_older_programs_first() -> None:
    policy = ProgramFcfsPriority()
    old_first = call("1", session="old", arrival_s=1.0)
    new_first = call("2", session="new", arrival_s=5.0)
    assert policy.priority(old_first, 1.0) > policy.priority(new_first, 5.0)
    old_second = call("3", session="old", arrival_s=9.0)  # a later turn of the older program
    assert policy.priority(old_second, 9.0) == policy.priority(old_first, 9.0) > policy.priority(new_first, 9.0)
