from __future__ import annotations

import pytest

from pythia_server.policy.pythia.priority import LookaheadPriority
from pythia_server.policy.types import (
    SGLANG_PRIORITY_PREEMPTION_THRESHOLD,
    PriorityPolicy,
)
from tests.pythia_server.policy.pythia.fakes import (
    WORKFLOW,
    ScriptedProfiler,
    call,
    context,
    prediction,
)


def _priority(mode: str = "proactive", **config: object) -> tuple[LookaheadPriority, ScriptedProfiler]:
    profiler = ScriptedProfiler(modes={WORKFLOW: mode})
    policy = LookaheadPriority(context(profiler, **config))
    assert isinstance(policy, PriorityPolicy)
    return policy, profiler


def _ask(policy: LookaheadPriority, profiler: ScriptedProfiler, session: str, *, now_s: float = 1.0,
         arrival_s: float = 1.0, **p: object) -> int:
    profiler.calls[(session, "writer")] = prediction(session=session, **p)  # type: ignore[arg-type]
    value = policy.priority(call(f"{session}-{now_s}", session=session, arrival_s=arrival_s), now_s)
    assert value is not None
    return value


@pytest.mark.parametrize(
    ("less", "more", "why"),
    [
        ({"work": 5000.0, "bound": 500}, {"work": 100.0, "bound": 100}, "less remaining work is more urgent"),
        ({"work": 800.0, "bound": 200, "fanout": 1.0}, {"work": 800.0, "bound": 200, "fanout": 8.0},
         "unblocking a wide fan-out is more urgent"),
    ],
)
def test_priority_orders_calls(less, more, why) -> None:  # type: ignore[no-untyped-def]
    policy, profiler = _priority()
    assert _ask(policy, profiler, "a", **less) < _ask(policy, profiler, "b", **more), why


def test_only_large_differences_in_remaining_work_preempt() -> None:
    policy, profiler = _priority()
    near = _ask(policy, profiler, "a", work=1000.0, bound=100) - _ask(policy, profiler, "b", work=2000.0, bound=100)
    far = _ask(policy, profiler, "c", work=100.0, bound=50) - _ask(policy, profiler, "d", work=50_000.0, bound=500)
    assert 0 < near <= SGLANG_PRIORITY_PREEMPTION_THRESHOLD
    assert far > SGLANG_PRIORITY_PREEMPTION_THRESHOLD


def test_ageing_raises_a_waiting_call_and_is_capped() -> None:
    policy, profiler = _priority(max_age_points=30)
    fresh = _ask(policy, profiler, "a", now_s=1.0, arrival_s=1.0, work=5000.0, bound=500)
    waited = _ask(policy, profiler, "a", now_s=21.0, arrival_s=1.0, work=5000.0, bound=500)
    forever = _ask(policy, profiler, "a", now_s=10_000.0, arrival_s=1.0, work=5000.0, bound=500)
    assert waited - fresh == 20
    assert forever - fresh == 30
    # A starving long workflow overtakes a fresh short one once it has waited long enough.
    short = _ask(policy, profiler, "b", now_s=10_000.0, arrival_s=10_000.0, work=10.0, bound=10)
    assert forever > short - SGLANG_PRIORITY_PREEMPTION_THRESHOLD


@pytest.mark.parametrize("mode", ["shadow", "unknown"])
def test_shadow_mode_is_fcfs(mode: str) -> None:
    policy, profiler = _priority(mode)
    values = {_ask(policy, profiler, s, work=w, bound=b) for s, w, b in (("a", 10.0, 10), ("b", 9e5, 900))}
    assert values == {policy.neutral}


def test_unknown_remaining_work_gets_the_neutral_level() -> None:
    policy, profiler = _priority()
    assert _ask(policy, profiler, "a", work=None, bound=100) == policy.neutral
    assert policy.priority(call("plain", session=None, workflow=None), 1.0) == policy.neutral
