"""The report's data: per workflow type and per agent, built from call and session records.

One builder serves every renderer (terminal tables, ``--json``, the gateway's
``/pythia/api/report``, the HTML report to come). Pure: records in, a JSON-ready dict out.

Definitions. A session is one (workflow, session) pair; its JCT is its last call's end
minus its first call's start (sessions still live count with their JCT so far; the
``sessions_ended`` key says how many are final). Token counts and the prefix cache hit
rate (cached / prompt tokens) use calls that finished (status ``ok``). Calls without a
workflow tag are grouped as ``(untagged)``; calls without an agent as ``(untagged)``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from pythia_server.store.records import CallRecord, SessionRecord

__all__ = ["UNTAGGED", "build_report", "mean", "percentile"]

UNTAGGED = "(untagged)"


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) with linear interpolation between order statistics."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _hit_rate(calls: Sequence[CallRecord]) -> float | None:
    prompt = sum(c.prompt_tokens or 0 for c in calls if c.cached_tokens is not None)
    cached = sum(c.cached_tokens or 0 for c in calls)
    return round(cached / prompt, 4) if prompt else None


def _values(calls: Iterable[CallRecord], attr: str) -> list[float]:
    return [v for v in (getattr(c, attr) for c in calls) if v is not None]


def _agent_row(agent: str, calls: list[CallRecord]) -> dict[str, Any]:
    ok = [c for c in calls if c.status == "ok"]
    prompt = _values(ok, "prompt_tokens")
    output = _values(ok, "output_tokens")
    ttft = _values(ok, "ttft_ms")
    e2e = _values(ok, "e2e_ms")
    queue = _values(ok, "queue_ms")
    return {
        "agent": agent,
        "calls": len(calls),
        "errors": sum(1 for c in calls if c.status == "error"),
        "aborted": sum(1 for c in calls if c.status == "aborted"),
        "prompt_tokens_mean": _rounded(mean(prompt), 1),
        "prompt_tokens_p95": _rounded(percentile(prompt, 0.95), 1),
        "output_tokens_mean": _rounded(mean(output), 1),
        "output_tokens_p95": _rounded(percentile(output, 0.95), 1),
        "cache_hit_rate": _hit_rate(ok),
        "queue_ms_mean": _rounded(mean(queue), 2),
        "ttft_ms_mean": _rounded(mean(ttft), 2),
        "ttft_ms_p95": _rounded(percentile(ttft, 0.95), 2),
        "e2e_ms_mean": _rounded(mean(e2e), 2),
        "e2e_ms_p95": _rounded(percentile(e2e, 0.95), 2),
    }


def _workflow_row(workflow: str, calls: list[CallRecord], ended: set[tuple[str, str]]) -> dict[str, Any]:
    spans: dict[str, list[float]] = {}
    for c in calls:
        if c.session is None:
            continue
        span = spans.setdefault(c.session, [c.started_at, c.finished_at])
        span[0] = min(span[0], c.started_at)
        span[1] = max(span[1], c.finished_at)
    jct = [end - start for start, end in spans.values()]
    ok = [c for c in calls if c.status == "ok"]
    by_agent: dict[str, list[CallRecord]] = defaultdict(list)
    for c in calls:
        by_agent[c.agent or UNTAGGED].append(c)
    return {
        "workflow": workflow,
        "sessions": len(spans),
        "sessions_ended": sum(1 for s in spans if (workflow, s) in ended),
        "calls": len(calls),
        "errors": sum(1 for c in calls if c.status == "error"),
        "aborted": sum(1 for c in calls if c.status == "aborted"),
        "jct_mean_s": _rounded(mean(jct)),
        "jct_p95_s": _rounded(percentile(jct, 0.95)),
        "cache_hit_rate": _hit_rate(ok),
        "prompt_tokens": sum(c.prompt_tokens or 0 for c in ok),
        "cached_tokens": sum(c.cached_tokens or 0 for c in ok),
        "output_tokens": sum(c.output_tokens or 0 for c in ok),
        "agents": [_agent_row(a, by_agent[a]) for a in sorted(by_agent)],
    }


def build_report(calls: Iterable[CallRecord], sessions: Iterable[SessionRecord] = (),
                 workflow: str | None = None) -> dict[str, Any]:
    """``{"workflows": [...]}`` sorted by workflow name, ``(untagged)`` last."""
    by_workflow: dict[str, list[CallRecord]] = defaultdict(list)
    for call in calls:
        by_workflow[call.workflow or UNTAGGED].append(call)
    ended = {(s.workflow, s.session) for s in sessions if s.ended_at is not None}
    names = sorted(by_workflow, key=lambda w: (w == UNTAGGED, w))
    if workflow is not None:
        names = [n for n in names if n == workflow]
    return {"workflows": [_workflow_row(n, by_workflow[n], ended) for n in names]}
