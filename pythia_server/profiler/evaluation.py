"""Scoring the profiler on recorded sessions: the time-ordered split behind ``profile``.

Sessions are ordered by their first call's start; the first ``train_fraction`` are
learned, the rest are scored by driving the real :class:`WorkflowProfiler` through
time (calls observed as they end, sessions ended after their last call):

- ``next_agent_top1``: after each step of a test session, is the most likely next
  agent (or the end of the session) the one that came? The model is frozen after
  training, the strict reading of a time-ordered split.
- ``next_agent_top1_online``: the same, but test sessions are learned as they end, as
  the live gateway does (prequential: a session is scored before it is learned).
- ``markov_top1`` (and ``_online``): the last-agent-only Markov model on the same steps.
- ``context_ceiling_top1``: the top-1 of the richest state the automaton can use (the
  last ``max_order`` agents and the current agent's loop count) *fitted on the test
  steps themselves* (each state answers with its most frequent next agent there). An
  in-sample, overfitted figure: no model with that state learned from earlier sessions
  can be expected to beat it, so it tells a data limit from a modelling one.
- ``length_bound_coverage``: share of test calls whose output stayed under the bound
  predicted for their agent when they arrived (calls with a bound only);
  ``length_bound_tightness``: mean bound over mean actual output of those calls.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pythia_server.profiler.automaton import CandidateSpec
from pythia_server.profiler.profiler import WorkflowProfiler
from pythia_server.profiler.steps import group_steps
from pythia_server.profiler.types import END, START, CallObservation, ProfilerConfig

_MARKOV = CandidateSpec("markov", 1, False)


@dataclass(frozen=True, slots=True)
class WorkflowScore:
    workflow: str
    train_sessions: int
    test_sessions: int
    test_steps: int
    next_agent_top1: float | None
    next_agent_top1_online: float | None
    markov_top1: float | None
    markov_top1_online: float | None
    context_ceiling_top1: float | None
    length_bound_coverage: float | None
    length_bound_tightness: float | None
    bound_calls: int
    test_calls: int
    mode_after_train: str
    mode: str
    context_model: str
    regex: str


@dataclass(slots=True)
class _Tally:
    top1: int = 0
    markov: int = 0
    steps: int = 0
    covered: int = 0
    bounded: int = 0
    bound_sum: float = 0.0
    actual_sum: float = 0.0
    calls: int = 0


Sessions = Mapping[tuple[str, str], Sequence[CallObservation]]


def split_sessions(sessions: Sessions, train_fraction: float) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Time-ordered split by session start, per workflow type (each type split alike)."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train fraction must be in (0, 1), got {train_fraction}")
    by_type: dict[str, list[tuple[float, tuple[str, str]]]] = {}
    for key, calls in sessions.items():
        if calls:
            by_type.setdefault(key[0], []).append((min(c.start_s for c in calls), key))
    train: list[tuple[str, str]] = []
    test: list[tuple[str, str]] = []
    for items in by_type.values():
        items.sort()
        cut = max(1, min(len(items) - 1, round(len(items) * train_fraction))) if len(items) > 1 else len(items)
        train += [k for _, k in items[:cut]]
        test += [k for _, k in items[cut:]]
    return train, test


@dataclass(frozen=True, slots=True)
class _Event:
    kind: str  # "end" (observe), "step" (score next agent), "close" (end session), "start" (score bound)
    key: tuple[str, str]
    call: CallObservation | None = None
    next_agent: str = ""


# At equal times: calls end, then steps are scored, then calls start, then sessions close.
_ORDER = {"end": 0, "step": 1, "start": 2, "close": 3}


def _drive(profiler: WorkflowProfiler, sessions: Sessions, keys: Sequence[tuple[str, str]], tallies: dict[str, _Tally] | None) -> None:
    """Replay ``keys`` sessions through ``profiler`` in time order; score into ``tallies``."""
    timeline: list[tuple[float, int, int, _Event]] = []

    def add(time_s: float, event: _Event) -> None:
        timeline.append((time_s, _ORDER[event.kind], len(timeline), event))

    for key in keys:
        calls = sorted(sessions[key], key=lambda c: (c.start_s, c.end_s))
        steps = group_steps(calls, {id(c): c.agent or "" for c in calls})
        for call in calls:
            add(call.start_s, _Event("start", key, call))
            add(call.end_s, _Event("end", key, call))
        for i, step in enumerate(steps):
            add(step.end_s, _Event("step", key, next_agent=steps[i + 1].agent if i + 1 < len(steps) else END))
        add(max(c.end_s for c in calls), _Event("close", key))
    timeline.sort(key=lambda item: item[:3])
    for time_s, _, _, event in timeline:
        workflow, session = event.key
        if event.kind == "end" and event.call is not None:
            profiler.observe(event.call)
        elif event.kind == "close":
            profiler.end_session(workflow, session, time_s)
        elif tallies is None:
            continue
        elif event.kind == "start" and event.call is not None:
            call = event.call
            tally = tallies.setdefault(workflow, _Tally())
            tally.calls += 1
            bound = profiler.predict(workflow, session, call.agent, time_s).output_bound_tokens
            if bound is not None:
                tally.bounded += 1
                tally.covered += call.output_tokens <= bound
                tally.bound_sum += bound
                tally.actual_sum += call.output_tokens
        elif event.kind == "step":
            tally = tallies.setdefault(workflow, _Tally())
            prediction = profiler.predict(workflow, session, None, time_s)
            tally.steps += 1
            tally.top1 += prediction.next_agent == event.next_agent
            tally.markov += _markov_top(profiler, workflow, session) == event.next_agent


def _markov_top(profiler: WorkflowProfiler, workflow: str, session: str) -> str | None:
    model = profiler.model(workflow)
    live = profiler._live.get((workflow, session))
    if model is None or live is None or not live.history:
        return None
    stats = model.automaton.lookup([START, live.history[-1]], 0, _MARKOV)
    return stats.top if stats is not None else None


def context_ceiling(sessions: Sessions, keys: Sequence[tuple[str, str]], max_order: int, loop_cap: int) -> dict[str, float]:
    """Per workflow type: in-sample top-1 of (last ``max_order`` agents, loop count) on ``keys``."""
    tables: dict[str, dict[tuple[object, ...], Counter[str]]] = {}
    for key in keys:
        calls = sorted(sessions[key], key=lambda c: (c.start_s, c.end_s))
        agents = [step.agent for step in group_steps(calls, {id(c): c.agent or "" for c in calls})]
        table = tables.setdefault(key[0], {})
        history = [START]
        visits: Counter[str] = Counter()
        for i, agent in enumerate(agents):
            history.append(agent)
            visits[agent] += 1
            state = (*history[-max_order:], min(visits[agent], loop_cap))
            table.setdefault(state, Counter())[agents[i + 1] if i + 1 < len(agents) else END] += 1
    out = {}
    for workflow, table in tables.items():
        total = sum(sum(c.values()) for c in table.values())
        out[workflow] = sum(max(c.values()) for c in table.values()) / total if total else 0.0
    return out


def evaluate(sessions: Sessions, train_fraction: float = 0.5, config: ProfilerConfig | None = None) -> list[WorkflowScore]:
    """Learn the first part of each workflow type's sessions, score on the rest."""
    train, test = split_sessions(sessions, train_fraction)
    trained = WorkflowProfiler(config)
    _drive(trained, sessions, train, None)
    modes_after_train = {wf: trained.mode(wf) for wf, _ in train}
    frozen, online = copy.deepcopy(trained), trained
    frozen.learning = False
    frozen_tallies: dict[str, _Tally] = {}
    online_tallies: dict[str, _Tally] = {}
    _drive(frozen, sessions, test, frozen_tallies)
    _drive(online, sessions, test, online_tallies)
    ceiling = context_ceiling(sessions, test, online.config.max_order, online.config.loop_count_cap)
    scores = []
    for workflow in sorted({wf for wf, _ in train} | {wf for wf, _ in test}):
        f = frozen_tallies.get(workflow, _Tally())
        o = online_tallies.get(workflow, _Tally())
        model = online.model(workflow)
        scores.append(
            WorkflowScore(
                workflow=workflow,
                train_sessions=sum(1 for wf, _ in train if wf == workflow),
                test_sessions=sum(1 for wf, _ in test if wf == workflow),
                test_steps=f.steps,
                next_agent_top1=_ratio(f.top1, f.steps),
                next_agent_top1_online=_ratio(o.top1, o.steps),
                markov_top1=_ratio(f.markov, f.steps),
                markov_top1_online=_ratio(o.markov, o.steps),
                context_ceiling_top1=ceiling.get(workflow) if f.steps else None,
                length_bound_coverage=_ratio(f.covered, f.bounded),
                length_bound_tightness=(f.bound_sum / f.actual_sum) if f.actual_sum > 0 else None,
                bound_calls=f.bounded,
                test_calls=f.calls,
                mode_after_train=modes_after_train.get(workflow, "unknown"),
                mode=online.mode(workflow),
                context_model=model.automaton.chosen.name if model is not None else "",
                regex=model.regex.render(online.config.prune_min_probability) if model is not None else "",
            )
        )
    return scores


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None
