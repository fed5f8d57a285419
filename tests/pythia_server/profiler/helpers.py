"""Small builders for profiler tests: sessions as lists of CallObservation."""

from __future__ import annotations

from collections.abc import Sequence

from pythia_server.profiler.profiler import WorkflowProfiler
from pythia_server.profiler.types import CallObservation


def session_calls(
    workflow: str,
    session: str,
    steps: Sequence[str | tuple[str, int]],
    *,
    start_s: float = 0.0,
    output_tokens: int = 100,
    gap_s: float = 1.0,
    duration_s: float = 2.0,
    role_blocks: int = 4,
) -> list[CallObservation]:
    """One call per step (``(agent, width)`` for a parallel fan-out of width calls)."""
    calls: list[CallObservation] = []
    t = start_s
    for index, step in enumerate(steps):
        agent, width = (step, 1) if isinstance(step, str) else step
        for branch in range(width):
            role = tuple(hash((workflow, agent, "role", i)) & 0xFFFFFFFF for i in range(role_blocks))
            own = tuple(hash((session, agent, index, branch, i)) & 0xFFFFFFFF for i in range(2))
            calls.append(
                CallObservation(
                    workflow=workflow,
                    session=session,
                    agent=agent,
                    start_s=t + 0.01 * branch,
                    end_s=t + duration_s + 0.01 * branch,
                    prompt_tokens=(role_blocks + 2) * 64,
                    output_tokens=output_tokens,
                    parent="planner" if width > 1 else None,
                    call_id=f"{session}/{index}/{branch}",
                    block_hashes=role + own,
                    block_size=64,
                )
            )
        t += duration_s + 0.01 * width + gap_s
    return calls


def feed(profiler: WorkflowProfiler, calls: Sequence[CallObservation], *, end: bool = True) -> None:
    """Observe calls in the order they finish, then end their session."""
    for call in sorted(calls, key=lambda c: c.end_s):
        profiler.observe(call)
    if end and calls:
        profiler.end_session(calls[0].workflow, calls[0].session, max(c.end_s for c in calls))
