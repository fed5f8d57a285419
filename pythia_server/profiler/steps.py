"""Calls to steps: how a session's calls are grouped into agent turns (fan-out).

A session's calls, in start order, form *steps*: a call joins the previous step when it
is the same agent, under the same parent, and starts before that step ended (parallel
instances of one agent: a fan-out of width n). Everything else starts a new step of
width 1. The join agent of a fan-out is simply the next step's agent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pythia_server.profiler.types import CallObservation


@dataclass(slots=True)
class Step:
    """One agent's turn: ``width`` parallel calls (1 when sequential).

    Mutable only so a fan-out grows in place while its calls arrive (no copy per call);
    once a session is learned its steps are not touched again.
    """

    agent: str
    width: int
    start_s: float
    end_s: float
    max_output_tokens: int
    parent: str | None = None


def extend_steps(steps: list[Step], call: CallObservation, agent: str) -> bool:
    """Add ``call`` (not earlier than the last step's start) to ``steps``.

    It joins the last step when that step is the same agent under the same parent and
    still running when this call starts (a fan-out). True when a new step began.
    """
    if steps:
        last = steps[-1]
        if last.agent == agent and call.start_s < last.end_s and last.parent == call.parent:
            last.width += 1
            last.end_s = max(last.end_s, call.end_s)
            last.max_output_tokens = max(last.max_output_tokens, call.output_tokens)
            return False
    steps.append(Step(agent, 1, call.start_s, call.end_s, call.output_tokens, call.parent))
    return True


def group_steps(calls: Sequence[CallObservation], agent_of: dict[int, str] | None = None) -> list[Step]:
    """Calls sorted by start time, grouped into steps (see the module docstring).

    ``agent_of`` maps ``id(call)`` to the agent name to use (after capping); the
    call's own tag otherwise.
    """
    steps: list[Step] = []
    for call in sorted(calls, key=lambda c: (c.start_s, c.end_s)):
        extend_steps(steps, call, agent_of[id(call)] if agent_of is not None else (call.agent or ""))
    return steps
