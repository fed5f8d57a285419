from __future__ import annotations

import pytest

from pythia_server.policy.pythia.bundle import PYTHIA_VARIANTS
from pythia_server.policy.pythia.priority import SESSION_TOP, LookaheadPriority
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
    """The critical-path order unless the test asks for another (``priority_order``)."""
    config.setdefault("priority_order", "critical-path")
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


# ---------------------------------------------------------------- session order (the default)
def _started(policy: LookaheadPriority, session: str, start_s: float) -> None:
    policy.context.started(call(f"{session}-first", session=session, arrival_s=start_s), "r0", start_s)


def _session_ask(policy: LookaheadPriority, profiler: ScriptedProfiler, session: str, agent: str = "writer", *,
                 now_s: float = 100.0, **p: object) -> int:
    profiler.calls[(session, agent)] = prediction(session=session, **p)  # type: ignore[arg-type]
    value = policy.priority(call(f"{session}-{agent}-{now_s}", session=session, agent=agent, arrival_s=now_s), now_s)
    assert value is not None
    return value


def test_session_order_puts_older_sessions_first_whatever_the_call() -> None:
    policy, profiler = _priority(priority_order="session", srpt_s_per_token=0.0)
    _started(policy, "old", 10.0)
    _started(policy, "new", 50.0)
    old_late_call = _session_ask(policy, profiler, "old", now_s=120.0, work=9000.0, bound=900)
    new_early_call = _session_ask(policy, profiler, "new", now_s=60.0, work=10.0, bound=10)
    assert old_late_call > new_early_call
    assert old_late_call == SESSION_TOP - round(10.0 / 0.01)
    # Fan-out siblings (and every other call of the session) share one level: they run together.
    siblings = {_session_ask(policy, profiler, "old", agent, now_s=t, work=5000.0, bound=300)
                for agent, t in (("searcher", 30.0), ("critic", 31.5), ("writer", 200.0))}
    assert siblings == {old_late_call}


def test_session_order_lets_a_short_session_pass_a_long_one_started_just_before() -> None:
    policy, profiler = _priority(priority_order="session", srpt_s_per_token=0.002)
    _started(policy, "long", 10.0)
    _started(policy, "short", 11.0)
    _started(policy, "later", 40.0)
    long_ = _session_ask(policy, profiler, "long", work=10_000.0, bound=500)  # key 10 + 21 s
    short = _session_ask(policy, profiler, "short", work=100.0, bound=100)  # key 11 + 0.4 s
    later = _session_ask(policy, profiler, "later", work=100.0, bound=100)  # key 40.4 s
    assert short > long_ > later


def test_srpt_variant_ages_a_long_session_past_shorter_ones_that_came_later() -> None:
    """``pythia-srpt``: 100 tokens of predicted remaining work weigh one second of waiting, so a
    session with 1,000 more tokens to do yields to one up to 10 s younger, never to a later one."""
    config = PYTHIA_VARIANTS["pythia-srpt"]
    policy, profiler = _priority(priority_order="session", **config)
    _started(policy, "long", 10.0)
    _started(policy, "short-9s-later", 19.0)
    _started(policy, "short-11s-later", 21.0)
    long_ = _session_ask(policy, profiler, "long", work=1_100.0, bound=100)  # key 10 + 12 s
    within = _session_ask(policy, profiler, "short-9s-later", work=100.0, bound=100)  # key 19 + 2 s
    beyond = _session_ask(policy, profiler, "short-11s-later", work=100.0, bound=100)  # key 21 + 2 s
    assert within > long_ > beyond


def test_session_order_never_needs_ageing() -> None:
    policy, profiler = _priority(priority_order="session")
    _started(policy, "a", 10.0)
    first = _session_ask(policy, profiler, "a", now_s=12.0, work=500.0, bound=100)
    asked_again = policy.priority(call("a-writer-12.0", session="a", arrival_s=12.0), 500.0)
    assert asked_again == first  # a re-asked waiting call keeps its place: the line itself is fair


@pytest.mark.parametrize("mode", ["shadow", "unknown"])
def test_session_order_shadow_and_plain_traffic_is_fcfs_by_call(mode: str) -> None:
    policy, profiler = _priority(mode, priority_order="session")
    _started(policy, "a", 10.0)
    early = _session_ask(policy, profiler, "a", now_s=20.0, work=9e5, bound=900)
    late = _session_ask(policy, profiler, "b", now_s=30.0, work=10.0, bound=10)
    plain = policy.priority(call("plain", session=None, workflow=None, arrival_s=40.0), 40.0)
    assert early == SESSION_TOP - 2000 and late == SESSION_TOP - 3000  # their arrivals, not the session's start
    assert plain is not None and late > plain
