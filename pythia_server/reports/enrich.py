"""The report's pictures as data: graph, JCT samples, session timelines, agent extras.

The report builder (reports/builder.py) gives per-workflow and per-agent aggregates;
:func:`enrich_report` adds the keys the HTML report and the live pages draw, computed
from the same call rows (and, when attached, the profiler's view, the cache manager's
actions and the autoscaler's decisions). Every key is documented in docs/reports.md.
Pure: rows and snapshots in, plain JSON-ready dicts out; nothing reads a clock.
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pythia_server.reports.data import UNTAGGED, build_report
from pythia_server.reports.observed import observed_graph
from pythia_server.store.records import CallRecord, SessionRecord

__all__ = [
    "UNTAGGED",
    "agent_extras",
    "build_full_report",
    "cache_action_summary",
    "critical_path",
    "enrich_report",
    "jct_samples",
    "percentile",
    "session_timeline",
    "timelines",
]

#: Calls drawn per session timeline at most; longer sessions are cut (``truncated``).
MAX_TIMELINE_CALLS = 300


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100), as numpy's default; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _workflow_of(call: CallRecord) -> str:
    return call.workflow or UNTAGGED


# --- JCT ---------------------------------------------------------------------------


def jct_samples(calls: Iterable[CallRecord], sessions: Iterable[SessionRecord] | None = None,
                limit: int = 2000) -> list[dict[str, Any]]:
    """One ``{"session", "start_s", "jct_s", "calls"}`` per session, oldest first (last ``limit``).

    The store's session records win when given (their JCT may be final); otherwise a
    session's JCT is its last call's end minus its first call's start.
    """
    samples: dict[str, dict[str, Any]] = {}
    for rec in sessions or ():
        samples[rec.session] = {"session": rec.session, "start_s": rec.first_call_at,
                                "jct_s": rec.jct_s, "calls": rec.calls}
    if not samples:
        spans: dict[str, list[float]] = {}
        for call in calls:
            if not call.session:
                continue
            span = spans.setdefault(call.session, [call.started_at, call.finished_at, 0])
            span[0] = min(span[0], call.started_at)
            span[1] = max(span[1], call.finished_at)
            span[2] += 1
        for session, (start, end, n) in spans.items():
            samples[session] = {"session": session, "start_s": start, "jct_s": end - start,
                                "calls": int(n)}
    ordered = sorted(samples.values(), key=lambda s: (s["start_s"], s["session"]))
    return ordered[-limit:]


# --- session timelines and the critical path ---------------------------------------


def critical_path(calls: Sequence[CallRecord]) -> list[CallRecord]:
    """The chain of calls that set the session's JCT, first to last.

    From the call that finished last, step back each time to the call that finished
    latest before it started: the one it was waiting for. Gaps between consecutive
    calls of the chain are tool / think time that the JCT also paid for.
    """
    if not calls:
        return []
    ordered = sorted(calls, key=lambda c: (c.finished_at, c.started_at, c.call_id))
    chain = [ordered[-1]]
    while True:
        current = chain[-1]
        before = [c for c in ordered if c.finished_at <= current.started_at and c is not current]
        if not before:
            break
        chain.append(before[-1])
    chain.reverse()
    return chain


def _idle_gaps(calls: Sequence[CallRecord]) -> list[tuple[float, float]]:
    """Intervals inside the session when no call was in flight (tool or think time)."""
    gaps: list[tuple[float, float]] = []
    ordered = sorted(calls, key=lambda c: c.started_at)
    busy_until = ordered[0].finished_at
    for call in ordered[1:]:
        if call.started_at > busy_until:
            gaps.append((busy_until, call.started_at))
        busy_until = max(busy_until, call.finished_at)
    return gaps


def session_timeline(calls: Sequence[CallRecord], label: str = "") -> dict[str, Any]:
    """One session drawn as bars: each call's queue, time to first token and the rest.

    Times are milliseconds from the session's first call. ``lane`` places concurrent
    calls of one agent on separate rows; ``critical`` marks the critical path.
    """
    ordered = sorted(calls, key=lambda c: (c.started_at, c.call_id))
    truncated = len(ordered) > MAX_TIMELINE_CALLS
    ordered = ordered[:MAX_TIMELINE_CALLS]
    t0 = ordered[0].started_at
    on_path = {id(c) for c in critical_path(ordered)}
    lane_ends: dict[str, list[float]] = defaultdict(list)
    bars: list[dict[str, Any]] = []
    for call in ordered:
        agent = call.agent or UNTAGGED
        ends = lane_ends[agent]
        lane = next((i for i, end in enumerate(ends) if end <= call.started_at), len(ends))
        if lane == len(ends):
            ends.append(call.finished_at)
        else:
            ends[lane] = call.finished_at
        bars.append({
            "call_id": call.call_id, "agent": agent, "lane": lane,
            "start_ms": (call.started_at - t0) * 1000.0,
            "end_ms": (call.finished_at - t0) * 1000.0,
            "queue_ms": call.queue_ms, "ttft_ms": call.ttft_ms,
            "prompt_tokens": call.prompt_tokens, "cached_tokens": call.cached_tokens,
            "output_tokens": call.output_tokens, "replica": call.replica,
            "status": call.status, "critical": id(call) in on_path,
        })
    end_s = max(c.finished_at for c in ordered)
    path = [b for b in bars if b["critical"]]
    path_busy_ms = sum(b["end_ms"] - b["start_ms"] for b in path)
    return {
        "label": label,
        "session": ordered[0].session,
        "start_s": t0,
        "jct_ms": (end_s - t0) * 1000.0,
        "calls": bars,
        "gaps": [{"start_ms": (a - t0) * 1000.0, "end_ms": (b - t0) * 1000.0}
                 for a, b in _idle_gaps(ordered)],
        "critical_path_ms": path_busy_ms,
        "critical_path_calls": len(path),
        "truncated": truncated,
    }


def timelines(calls: Iterable[CallRecord], jct: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Timelines of a few telling sessions: typical (median JCT), slowest, fastest, latest."""
    by_session: dict[str, list[CallRecord]] = defaultdict(list)
    for call in calls:
        if call.session:
            by_session[call.session].append(call)
    known = [s for s in jct if s["session"] in by_session]
    if not known:
        return []
    by_jct = sorted(known, key=lambda s: (s["jct_s"], s["session"]))
    picks = [
        ("median JCT", by_jct[(len(by_jct) - 1) // 2]),
        ("slowest", by_jct[-1]),
        ("fastest", by_jct[0]),
        ("latest", max(known, key=lambda s: (s["start_s"], s["session"]))),
    ]
    chosen: dict[str, str] = {}
    for label, sample in picks:
        chosen.setdefault(sample["session"], label)
    return [session_timeline(by_session[s], label) for s, label in chosen.items()]


# --- per-agent extras --------------------------------------------------------------


def agent_extras(calls: Iterable[CallRecord],
                 bounds: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Per agent: queue, TTFT p95, output max, and the predicted bound against actuals."""
    grouped: dict[str, list[CallRecord]] = defaultdict(list)
    for call in calls:
        grouped[call.agent or UNTAGGED].append(call)
    extras: dict[str, dict[str, Any]] = {}
    for agent, rows in grouped.items():
        outputs = [c.output_tokens for c in rows if c.output_tokens is not None]
        bound = (bounds or {}).get(agent, {}).get("output_tokens_bound")
        extras[agent] = {
            "queue_ms_mean": _mean([c.queue_ms for c in rows if c.queue_ms is not None]),
            "ttft_ms_p95": percentile([c.ttft_ms for c in rows if c.ttft_ms is not None], 95),
            "output_tokens_max": max(outputs) if outputs else None,
            "output_bound": bound,
            "bound_coverage": (sum(o <= bound for o in outputs) / len(outputs)
                               if bound is not None and outputs else None),
            "errors": sum(c.status != "ok" for c in rows),
        }
    return extras


# --- cache actions ----------------------------------------------------------------


def cache_action_summary(actions: Iterable[Mapping[str, Any]], recent: int = 20) -> dict[str, dict[str, Any]]:
    """Per workflow type, the ``cache_actions`` section from a log of cache-manager actions.

    Each action is ``{"at_s", "workflow", "action", "agent", "replica", "tokens",
    "outcome", "reason"}``; ``action`` "warm" counts as a warm sent, ``outcome`` "hit" as
    a warm that a later call used and "wasted" as one evicted or never used.
    """
    summary: dict[str, dict[str, Any]] = {}
    for act in sorted(actions, key=lambda a: float(a.get("at_s") or 0.0)):
        entry = summary.setdefault(str(act.get("workflow") or UNTAGGED), {
            "warms_sent": 0, "warm_hits": 0, "warms_wasted": 0, "warm_tokens": 0,
            "hit_tokens": 0, "recent": []})
        tokens = int(act.get("tokens") or 0)
        if act.get("action") == "warm":
            entry["warms_sent"] += 1
            entry["warm_tokens"] += tokens
        if act.get("outcome") == "hit":
            entry["warm_hits"] += 1
            entry["hit_tokens"] += tokens
        elif act.get("outcome") == "wasted":
            entry["warms_wasted"] += 1
        entry["recent"] = [*entry["recent"][-(recent - 1):], dict(act)] if recent > 0 else []
    return summary


# --- assembly ------------------------------------------------------------------------


def enrich_report(report: Mapping[str, Any], calls: Iterable[CallRecord], *,
                  sessions: Iterable[SessionRecord] | None = None,
                  profiler: Mapping[str, Mapping[str, Any]] | None = None,
                  cache_actions: Mapping[str, Mapping[str, Any]] | None = None,
                  autoscaler: Mapping[str, Any] | None = None,
                  generated_at_s: float | None = None) -> dict[str, Any]:
    """A copy of ``report`` with the keys of docs/reports.md added to every workflow.

    ``profiler`` maps a workflow type to its view (see
    :func:`pythia_server.reports.profiler_view.profiler_views`); ``cache_actions`` maps a
    workflow type to its cache-action summary; ``autoscaler`` is the pool's decision log.
    Absent inputs leave ``None`` so the pages can say "not yet" instead of inventing data.
    """
    out = copy.deepcopy(dict(report))
    by_workflow: dict[str, list[CallRecord]] = defaultdict(list)
    for call in calls:
        by_workflow[_workflow_of(call)].append(call)
    sessions_by_workflow: dict[str, list[SessionRecord]] = defaultdict(list)
    for rec in sessions or ():
        sessions_by_workflow[rec.workflow or UNTAGGED].append(rec)
    for wf in out.get("workflows", []):
        name = wf.get("workflow") or UNTAGGED
        rows = by_workflow.get(name, [])
        view = (profiler or {}).get(name)
        jct = jct_samples(rows, sessions_by_workflow.get(name))
        observed = observed_graph(rows)
        wf["graph"] = _with_counts((view or {}).get("graph"), observed) or observed
        wf["profiler"] = _profiler_summary(view)
        wf["jct"] = jct
        wf["timelines"] = timelines(rows, jct)
        wf["cache_actions"] = dict(cache_actions[name]) if cache_actions and name in cache_actions else None
        extras = agent_extras(rows, (view or {}).get("bounds"))
        for agent in wf.get("agents", []):
            for key, value in extras.get(agent.get("agent") or UNTAGGED, {}).items():
                agent.setdefault(key, value)
    out["autoscaler"] = dict(autoscaler) if autoscaler is not None else None
    if generated_at_s is not None:
        out["generated_at_s"] = generated_at_s
    return out


def build_full_report(calls: Sequence[CallRecord], sessions: Sequence[SessionRecord] = (), *,
                      workflow: str | None = None, profiler: Any = None, history: Any = None,
                      cache_actions: Mapping[str, Mapping[str, Any]] | None = None,
                      autoscaler: Mapping[str, Any] | None = None,
                      now_s: float | None = None) -> dict[str, Any]:
    """H2's :func:`build_report` plus every key of docs/reports.md: what the HTML draws.

    ``profiler`` is a :class:`~pythia_server.profiler.profiler.WorkflowProfiler` (or
    anything with ``snapshot()``); ``history`` an
    :class:`~pythia_server.reports.profiler_view.AccuracyHistory` to record into and draw
    from (the caller owns it so the history outlives one report).
    """
    views = None
    if profiler is not None:
        from pythia_server.reports.profiler_view import profiler_views

        snapshot = profiler.snapshot()
        if history is not None and now_s is not None:
            history.record(snapshot, now_s)
        views = profiler_views(snapshot, history)
    base = build_report(calls, sessions, workflow)
    return enrich_report(base, calls, sessions=sessions, profiler=views,
                         cache_actions=cache_actions, autoscaler=autoscaler, generated_at_s=now_s)


def _with_counts(graph: Mapping[str, Any] | None, observed: Mapping[str, Any]) -> dict[str, Any] | None:
    """The profiler's graph with call counts and widest fan-out taken from the records."""
    if not graph or not graph.get("nodes"):
        return None
    seen = {n["agent"]: n for n in observed.get("nodes", [])}
    nodes = []
    for node in graph["nodes"]:
        extra = seen.get(node["agent"], {})
        merged = dict(node)
        for key in ("calls", "sessions", "visits_per_session"):
            if key in extra:
                merged[key] = extra[key]
        merged["fanout_max"] = max(int(node.get("fanout_max") or 1), int(extra.get("fanout_max") or 1))
        nodes.append(merged)
    return {**graph, "nodes": nodes}


def _profiler_summary(view: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if view is None:
        return None
    return {key: view.get(key) for key in
            ("mode", "mode_reason", "sessions_seen", "regex", "next_agent_top1",
             "bound_coverage", "accuracy")}
