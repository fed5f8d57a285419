from __future__ import annotations

from pythia_server.policy.pythia.cache_manager import SpeculativeCacheManager
from pythia_server.policy.pythia.priority import LookaheadPriority
from tests.pythia_server.policy.pythia.fakes import (
    WORKFLOW,
    ScriptedProfiler,
    call,
    context,
    outcome,
    prediction,
)


def test_each_finished_call_feeds_the_profiler_once_whoever_hears_first() -> None:
    profiler = ScriptedProfiler()
    ctx = context(profiler)
    cache, priority = SpeculativeCacheManager(ctx), LookaheadPriority(ctx)
    info = call("c1", blocks=(1, 2), arrival_s=3.0)
    cache.on_start(info, "r0", 3.0)
    cache.on_start(info, "r0", 3.0)  # told twice: still one call in flight
    assert len(ctx.sessions["s1"].in_flight) == 1
    priority.on_finish(outcome(info, finished_s=5.0, output=42), 5.0)
    cache.on_finish(outcome(info, finished_s=5.0, output=42), 5.0)
    assert len(profiler.observed) == 1
    seen = profiler.observed[0]
    assert (seen.workflow, seen.session, seen.agent, seen.start_s, seen.end_s) == (WORKFLOW, "s1", "writer", 3.0, 5.0)
    assert seen.output_tokens == 42 and seen.block_hashes == (1, 2) and seen.call_id == "c1"
    assert not ctx.sessions["s1"].in_flight
    cache.on_session_end("s1", 9.0)
    cache.on_session_end("s1", 9.0)
    assert profiler.ended == [(WORKFLOW, "s1", 9.0)]
    assert "s1" in ctx.ended and "s1" not in ctx.sessions


def test_calls_without_workflow_or_session_are_not_tracked() -> None:
    profiler = ScriptedProfiler()
    ctx = context(profiler)
    for info in (call("a", session=None), call("b", workflow=None)):
        assert ctx.started(info, "r0", 1.0) is None
        assert ctx.finished(outcome(info), 2.0) is None
    assert not ctx.sessions and not profiler.observed


def test_a_driver_fed_profiler_is_only_read() -> None:
    profiler = ScriptedProfiler()
    ctx = context(profiler)
    ctx.feed_profiler = False
    info = call("c1")
    ctx.started(info, "r0", 1.0)
    ctx.finished(outcome(info), 2.0)
    ctx.end_session("s1", 3.0)
    assert profiler.observed == [] and profiler.ended == []


def test_predictions_are_acted_on_only_in_proactive_mode() -> None:
    profiler = ScriptedProfiler(calls={("s1", "writer"): prediction(bound=50)})
    ctx = context(profiler)
    info = call("c1", max_tokens=500)
    for mode, expected in (("shadow", None), ("unknown", None), ("proactive", 50)):
        profiler.modes[WORKFLOW] = mode
        ctx._memo = None
        p = ctx.predict_call(info, float(len(mode)))
        assert (p.output_bound_tokens if p else None) == expected
    # Output used for placement: the bound when proactive, else max_tokens, else the default.
    assert ctx.output_tokens(info, ctx.predict_call(info, 9.0)) == 50
    assert ctx.output_tokens(info, None) == 500
    assert ctx.output_tokens(call("c2"), None) == ctx.config.default_output_tokens
