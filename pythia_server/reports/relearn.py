"""The profiler's view rebuilt from stored call records (``report --db``, no gateway running).

The gateway learns as calls finish; a store file read later has only the records. This
replays them through a fresh :class:`~pythia_server.profiler.profiler.WorkflowProfiler`
in the order the gateway saw them (finished calls observed at their end, sessions ended
at their recorded end or after the idle timeout), so the offline report shows the same
learned graph, bounds and mode as the live one would have. :func:`call_observation` is
the one mapping from a :class:`CallRecord` to what the profiler is fed, shared with the
gateway's live feed.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence

from pythia_server.profiler.profiler import WorkflowProfiler
from pythia_server.profiler.types import CallObservation, ProfilerConfig
from pythia_server.reports.profiler_view import AccuracyHistory
from pythia_server.store.records import CallRecord, SessionRecord

__all__ = ["call_observation", "learnable", "replay_profiler"]


def learnable(record: CallRecord) -> bool:
    """Calls the profiler learns from: finished (``ok``) and attributable to a session."""
    return record.status == "ok" and bool(record.workflow) and bool(record.session)


def call_observation(record: CallRecord) -> CallObservation:
    """A call record as the profiler's input (times in Unix seconds, block hashes kept)."""
    return CallObservation(
        workflow=record.workflow, session=record.session, agent=record.agent,
        start_s=record.started_at, end_s=record.finished_at,
        prompt_tokens=record.prompt_tokens or 0, output_tokens=record.output_tokens or 0,
        cached_tokens=record.cached_tokens or 0, parent=record.parent, call_id=record.call_id,
        block_hashes=tuple(record.block_hashes), block_size=record.block_size)


def replay_profiler(calls: Iterable[CallRecord], sessions: Sequence[SessionRecord] = (), *,
                    config: ProfilerConfig | None = None, session_idle_timeout_s: float = 600.0,
                    now_s: float | None = None, history: AccuracyHistory | None = None,
                    history_interval_s: float = 30.0) -> WorkflowProfiler:
    """A profiler that has learned ``calls`` as the gateway would have.

    A session ends at its record's ``ended_at``; one without (the gateway stopped before
    it ended) ends ``session_idle_timeout_s`` after its last call if that is before
    ``now_s``, else it stays live (not learned), as it would in a running gateway.
    ``history``, when given, gets an accuracy point every ``history_interval_s`` of
    replayed time and at the end.
    """
    profiler = WorkflowProfiler(config or ProfilerConfig())
    # (time, order, kind, payload): at equal times calls come before the session ends.
    events: list[tuple[float, int, int, object]] = []
    last_end: dict[tuple[str, str], float] = {}
    for seq, record in enumerate(calls):
        if not learnable(record):
            continue
        events.append((record.finished_at, 0, seq, record))
        key = (record.workflow or "", record.session or "")
        last_end[key] = max(last_end.get(key, record.finished_at), record.finished_at)
    ended: dict[tuple[str, str], float] = {}
    for rec in sessions:
        if rec.ended_at is not None:
            ended[(rec.workflow, rec.session)] = max(rec.ended_at, last_end.get((rec.workflow, rec.session), 0.0))
    for key, end_s in last_end.items():
        if key not in ended and (now_s is None or end_s + session_idle_timeout_s <= now_s):
            ended[key] = end_s + session_idle_timeout_s
    for seq, (key, end_s) in enumerate(sorted(ended.items(), key=lambda kv: kv[1])):
        events.append((end_s, 1, seq, key))
    heapq.heapify(events)
    next_point_s: float | None = None
    at_s = 0.0
    while events:
        at_s, kind, _seq, payload = heapq.heappop(events)
        if kind == 0:
            assert isinstance(payload, CallRecord)
            profiler.observe(call_observation(payload))
            continue
        assert isinstance(payload, tuple)
        profiler.end_session(payload[0], payload[1], at_s)
        if history is not None and (next_point_s is None or at_s >= next_point_s):
            history.record(profiler.snapshot(), at_s)
            next_point_s = at_s + history_interval_s
    if history is not None and next_point_s is not None:
        history.record(profiler.snapshot(), max(at_s, now_s or at_s))
    return profiler
