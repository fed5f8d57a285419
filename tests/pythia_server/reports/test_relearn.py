"""Stored call records replayed through a fresh profiler learn what the live gateway learned."""

from __future__ import annotations

from pythia_server.profiler.profiler import WorkflowProfiler
from pythia_server.profiler.types import ProfilerConfig
from pythia_server.reports.profiler_view import AccuracyHistory
from pythia_server.reports.relearn import call_observation, replay_profiler
from pythia_server.store.records import CallRecord, SessionRecord

CONFIG = ProfilerConfig(min_validation_sessions=2, bound_quantile=0.5, bound_confidence=0.5)


def record(session: str, agent: str, start: float, *, status: str = "ok", workflow: str | None = "wf",
           output: int = 10) -> CallRecord:
    return CallRecord(call_id=f"{session}-{agent}-{start}", workflow=workflow, session=session, agent=agent,
                      parent=None, call_tag=None, model="m", replica="r0", route="chat", stream=False,
                      prompt_tokens=100, cached_tokens=50, output_tokens=output, queue_ms=1.0, ttft_ms=5.0,
                      e2e_ms=1000.0, finish_reason="length", status=status, error=None, started_at=start,
                      finished_at=start + 1.0, block_size=4, block_hashes=(1, 2, 3))


def session_calls(session: str, t0: float) -> list[CallRecord]:
    return [record(session, "planner", t0), record(session, "coder", t0 + 2), record(session, "tester", t0 + 4)]


def session_row(session: str, t0: float, ended: bool) -> SessionRecord:
    return SessionRecord("wf", session, t0, t0 + 5, t0 + 6 if ended else None, 5.0, 3)


def test_call_observation_keeps_what_the_profiler_uses() -> None:
    obs = call_observation(record("s", "a", 10.0))
    assert (obs.workflow, obs.session, obs.agent, obs.start_s, obs.end_s) == ("wf", "s", "a", 10.0, 11.0)
    assert (obs.prompt_tokens, obs.cached_tokens, obs.output_tokens) == (100, 50, 10)
    assert (obs.block_hashes, obs.block_size, obs.call_id) == ((1, 2, 3), 4, "s-a-10.0")


def test_replay_equals_feeding_the_profiler_live() -> None:
    calls = [c for i in range(6) for c in session_calls(f"s{i}", 100.0 * i)]
    calls.append(record("s0", "planner", 3.0, status="error"))  # failed calls are not learned
    calls.append(record("x", "planner", 5.0, workflow=None))  # nor untagged ones
    sessions = [session_row(f"s{i}", 100.0 * i, ended=True) for i in range(6)]
    replayed = replay_profiler(calls, sessions, config=CONFIG)

    live = WorkflowProfiler(CONFIG)
    for i in range(6):
        for c in session_calls(f"s{i}", 100.0 * i):
            live.observe(call_observation(c))
        live.end_session("wf", f"s{i}", 100.0 * i + 6)
    assert replayed.snapshot() == live.snapshot()
    (wf,) = replayed.snapshot().workflows
    assert wf.sessions_learned == 6 and wf.regex == "planner coder tester"
    assert wf.mode.mode == "proactive"


def test_sessions_without_an_end_end_after_the_idle_timeout_or_stay_live() -> None:
    calls = session_calls("old", 0.0) + session_calls("recent", 1000.0)
    sessions = [session_row("old", 0.0, ended=False), session_row("recent", 1000.0, ended=False)]
    history = AccuracyHistory(min_interval_s=1.0)
    profiler = replay_profiler(calls, sessions, config=CONFIG, session_idle_timeout_s=600.0, now_s=1100.0,
                               history=history, history_interval_s=1.0)
    (wf,) = profiler.snapshot().workflows
    assert wf.sessions_learned == 1 and profiler.live_sessions == 1  # "recent" is still live at now_s
    assert history.points("wf") and history.points("wf")[0]["sessions"] == 1
    assert replay_profiler(calls, sessions, config=CONFIG).snapshot().workflows[0].sessions_learned == 2
