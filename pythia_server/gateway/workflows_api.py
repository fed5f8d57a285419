"""The JSON the gateway serves about what the profiler learned (``/pythia/api/workflows``).

Pure shaping of a :class:`~pythia_server.profiler.types.WorkflowSnapshot` into JSON, and
:func:`frozen_profiler`, which takes the profiler's view on the event loop (where the
profiler lives) so a report can be built in a worker thread without touching it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pythia_server.profiler.types import ProfilerSnapshot, WorkflowSnapshot
from pythia_server.reports.profiler_view import profiler_graph

__all__ = ["frozen_profiler", "workflow_detail", "workflow_summary"]


def workflow_summary(wf: WorkflowSnapshot) -> dict[str, Any]:
    """One workflow type: mode and why, the accuracy it was judged on, the learned graph."""
    mode = wf.mode
    return {
        "workflow": wf.workflow,
        "mode": mode.mode,
        "mode_reason": mode.reason,
        "sessions_judged": mode.sessions_judged,
        "next_agent_top1": mode.next_agent_top1,
        "bound_coverage": mode.bound_coverage,
        "promotions": mode.promotions,
        "demotions": mode.demotions,
        "sessions_learned": wf.sessions_learned,
        "calls_learned": wf.calls_learned,
        "context_model": wf.context_model,
        "regex": wf.regex,
        "graph": profiler_graph(wf),
    }


def workflow_detail(wf: WorkflowSnapshot, accuracy: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """:func:`workflow_summary` plus per-agent bounds, delays, prefixes, fan-out and history."""
    return {
        **workflow_summary(wf),
        "model_scores": dict(wf.model_scores),
        "edges": [{"src": src, "dst": dst, "p": p} for src, dst, p in wf.edges],
        "agents": {agent: {"samples": b.samples, "mean_tokens": b.mean_tokens,
                           "median_tokens": b.median_tokens, "output_bound_tokens": b.bound_tokens,
                           "quantile": b.quantile, "confidence": b.confidence}
                   for agent, b in sorted(wf.agents.items())},
        "delays_s": {edge: {"median_s": median, "p90_s": p90} for edge, (median, p90) in wf.delays_s.items()},
        "prefixes": {agent: dict(kinds) for agent, kinds in wf.prefixes.items()},
        "fanout": dict(wf.fanout),
        "accuracy": [dict(point) for point in accuracy],
    }


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """Something with ``snapshot()`` returning a view taken earlier."""

    value: ProfilerSnapshot

    def snapshot(self) -> ProfilerSnapshot:
        return self.value


@dataclass(frozen=True, slots=True)
class _History:
    """An accuracy history copied out of the live one: read-only."""

    by_workflow: dict[str, list[dict[str, Any]]]

    def record(self, snapshot: ProfilerSnapshot, now_s: float) -> None:
        return None  # recorded on the event loop already

    def points(self, workflow: str) -> list[dict[str, Any]]:
        return self.by_workflow.get(workflow, [])


def frozen_profiler(learning: Any, now_s: float) -> tuple[_Snapshot, _History]:
    """The feed's profiler and history as read-only copies (call on the event loop)."""
    learning.drain()
    snapshot = learning.record_history(now_s)
    points = {wf.workflow: learning.history.points(wf.workflow) for wf in snapshot.workflows}
    return _Snapshot(snapshot), _History(points)
