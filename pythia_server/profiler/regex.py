"""Summaries of a workflow type as a bounded regular expression, for people and reports.

Each finished session's steps are compressed into units: a run of a repeated cycle of
one to three agents becomes ``(A B){n}``; a fan-out step becomes ``A[xw]``. Sessions
with the same sequence of units (the *skeleton*) are merged and their repeat counts
and widths kept as ranges. The summary is the alternation of the skeletons that cover
at least the pruning threshold of sessions, most common first, e.g.
``CPO CTO (Programmer Reviewer){1,3} Programmer{1,9} CEO CPO``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pythia_server.profiler.steps import Step

_MAX_PERIOD = 3


@dataclass(slots=True)
class _Unit:
    agents: tuple[str, ...]
    reps_min: int
    reps_max: int
    width_min: int
    width_max: int


_MEMO_ENTRIES = 2048  # remembered (skeleton, session shape) parses
_MEMO_MAX_STEPS = 256  # longer sessions are parsed afresh (memory stays bounded)


@dataclass(slots=True)
class _Skeleton:
    count: int = 0
    units: list[_Unit] = field(default_factory=list)


def compress(steps: Sequence[Step]) -> list[tuple[tuple[str, ...], int, int]]:
    """Greedy cycle compression: a list of (cycle agents, repetitions, max width)."""
    agents = [s.agent for s in steps]
    units: list[tuple[tuple[str, ...], int, int]] = []
    i = 0
    while i < len(agents):
        best_period, best_reps = 1, 1
        for period in range(1, _MAX_PERIOD + 1):
            cycle = agents[i : i + period]
            if len(cycle) < period:
                break
            reps = 1
            while agents[i + reps * period : i + (reps + 1) * period] == cycle:
                reps += 1
            if reps > 1 and period * reps > best_period * best_reps:
                best_period, best_reps = period, reps
        span = best_period * best_reps
        width = steps[i].width if span == 1 else max(s.width for s in steps[i : i + span])
        units.append((tuple(agents[i : i + best_period]), best_reps, width))
        i += span
    return units


class RegexSummary:
    """Bounded merge of session skeletons (at most ``max_skeletons`` distinct ones)."""

    def __init__(self, max_skeletons: int = 256) -> None:
        self._max = max_skeletons
        self._skeletons: dict[tuple[tuple[str, ...], ...], _Skeleton] = {}
        self.sessions = 0
        # Session shape (agents, widths) -> (skeleton version, every skeleton that parses
        # it and how). A skeleton's units never change, so the answer holds until the set of
        # skeletons changes; structured workflows repeat shapes, so most sessions skip parsing.
        self._parses: dict[tuple[tuple[str, ...], tuple[int, ...]], tuple[int, list[tuple[_Skeleton, list[tuple[int, int]]]]]] = {}
        self._version = 0

    def add(self, steps: Sequence[Step]) -> None:
        """Merge one finished session: into the most common skeleton that parses it,
        else as a new skeleton of its own compressed units."""
        if not steps:
            return
        self.sessions += 1
        agents = [s.agent for s in steps]
        if len(agents) <= _MEMO_MAX_STEPS:
            shape = (tuple(agents), tuple(s.width for s in steps))
            known = self._parses.get(shape)
            if known is None or known[0] != self._version:
                if len(self._parses) >= _MEMO_ENTRIES:
                    self._parses.clear()  # bounded: rebuilt from the shapes still coming
                parsing = []
                for skeleton in self._skeletons.values():
                    parsed = _parse(skeleton.units, agents, steps)
                    if parsed is not None:
                        parsing.append((skeleton, parsed))
                known = self._parses[shape] = (self._version, parsing)
            if known[1]:
                # the most common (the first of equals, as a stable sort would rank them)
                skeleton, parsed = max(known[1], key=lambda item: item[0].count)
                self._merge(skeleton, parsed)
                return
        else:
            for skeleton in sorted(self._skeletons.values(), key=lambda s: -s.count):
                parsed = _parse(skeleton.units, agents, steps)
                if parsed is not None:
                    self._merge(skeleton, parsed)
                    return
        self._version += 1
        units = compress(steps)
        key = tuple(agents for agents, _, _ in units)
        if len(self._skeletons) >= self._max:
            rarest = min(self._skeletons, key=lambda k: self._skeletons[k].count)
            del self._skeletons[rarest]
        skeleton = self._skeletons[key] = _Skeleton(
            0, [_Unit(agents, reps, reps, width, width) for agents, reps, width in units]
        )
        self._merge(skeleton, [(reps, width) for _, reps, width in units])
        self._absorb(key)

    def _absorb(self, key: tuple[tuple[str, ...], ...]) -> None:
        """Fold older skeletons that the new one also describes (e.g. a loop seen once)."""
        target = self._skeletons[key]
        for other_key, other in list(self._skeletons.items()):
            if other_key == key:
                continue
            fewest = _parse(target.units, *_expand(other, True))
            most = _parse(target.units, *_expand(other, False))
            if fewest is None or most is None:
                continue
            self._merge(target, fewest)
            self._merge(target, most)
            target.count += other.count - 2
            del self._skeletons[other_key]

    @staticmethod
    def _merge(skeleton: _Skeleton, parsed: list[tuple[int, int]]) -> None:
        skeleton.count += 1
        for unit, (reps, width) in zip(skeleton.units, parsed):
            unit.reps_min = min(unit.reps_min, reps)
            unit.reps_max = max(unit.reps_max, reps)
            unit.width_min = min(unit.width_min, width)
            unit.width_max = max(unit.width_max, width)

    def render(self, min_share: float, max_alternatives: int = 3) -> str:
        """The main paths as one expression; rare skeletons pruned (``min_share``)."""
        if not self._skeletons:
            return ""
        ranked = sorted(self._skeletons.items(), key=lambda kv: (-kv[1].count, kv[0]))
        kept = [s for _, s in ranked if s.count / max(1, self.sessions) >= min_share][:max_alternatives]
        if not kept:
            kept = [ranked[0][1]]
        parts = [" ".join(_render_unit(u) for u in s.units) for s in kept]
        return parts[0] if len(parts) == 1 else " | ".join(f"({p})" for p in parts)

    def coverage(self, min_share: float, max_alternatives: int = 3) -> float:
        """Share of sessions whose skeleton appears in :meth:`render`."""
        counts = sorted((s.count for s in self._skeletons.values()), reverse=True)
        kept = [c for c in counts if c / max(1, self.sessions) >= min_share][:max_alternatives] or counts[:1]
        return sum(kept) / max(1, self.sessions)


def _parse(units: Sequence[_Unit], agents: list[str], steps: Sequence[Step]) -> list[tuple[int, int]] | None:
    """Greedy match of a session against a skeleton: each unit's cycle at least once."""
    parsed: list[tuple[int, int]] = []
    i = 0
    for unit in units:
        cycle = list(unit.agents)
        period = len(cycle)
        reps = 0
        while agents[i + reps * period : i + (reps + 1) * period] == cycle:
            reps += 1
        if reps == 0:
            return None
        span = reps * period
        parsed.append((reps, steps[i].width if span == 1 else max(s.width for s in steps[i : i + span])))
        i += span
    return parsed if i == len(agents) else None


def _expand(skeleton: _Skeleton, low: bool) -> tuple[list[str], list[Step]]:
    """A session the skeleton stands for: every unit at its fewest (or most) repeats."""
    agents: list[str] = []
    steps: list[Step] = []
    for unit in skeleton.units:
        reps, width = (unit.reps_min, unit.width_min) if low else (unit.reps_max, unit.width_max)
        for _ in range(reps):
            for agent in unit.agents:
                agents.append(agent)
                steps.append(Step(agent, width, 0.0, 0.0, 0))
    return agents, steps


def _render_unit(unit: _Unit) -> str:
    names = [_quote(a) for a in unit.agents]
    if unit.width_max > 1:
        width = f"{unit.width_max}" if unit.width_min == unit.width_max else f"{unit.width_min}-{unit.width_max}"
        names = [f"{n}[x{width}]" for n in names]
    body = names[0] if len(names) == 1 else "(" + " ".join(names) + ")"
    if unit.reps_max == 1:
        return body
    if unit.reps_min == unit.reps_max:
        return f"{body}{{{unit.reps_min}}}"
    return f"{body}{{{unit.reps_min},{unit.reps_max}}}"


def _quote(agent: str) -> str:
    return agent.replace(" ", "_")
