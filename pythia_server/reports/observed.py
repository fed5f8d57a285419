"""The workflow graph as the call records show it: steps, transitions, fan-out, loops.

This is what the report draws when the profiler has not (yet) learned a workflow type,
and what its learned graph can be checked against. Pure: call records in, a plain dict
(the ``graph`` schema of docs/reports.md) out.

A session's calls, ordered by start, are cut into *steps*: a step is one agent's calls
that run concurrently (a fan-out of width N when N calls overlap). Consecutive steps give
the transitions; the first and last give the entry and exit edges (``src`` / ``dst`` of
``None``). An edge back to an agent at the same or an earlier layer is a loop.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from pythia_server.reports.data import UNTAGGED
from pythia_server.store.records import CallRecord

__all__ = ["Step", "layers", "loop_edges", "observed_graph", "session_steps", "summarise_paths"]


@dataclass(frozen=True, slots=True)
class Step:
    """One agent's concurrent calls inside a session: ``width`` > 1 is a fan-out."""

    agent: str
    width: int


def session_steps(calls: Sequence[CallRecord]) -> list[Step]:
    """Cut one session's calls (any order) into steps, in order of start."""
    steps: list[Step] = []
    group_agent: str | None = None
    group_end = 0.0
    width = 0
    for call in sorted(calls, key=lambda c: (c.started_at, c.call_id)):
        agent = call.agent or UNTAGGED
        if agent == group_agent and call.started_at < group_end:
            width += 1
            group_end = max(group_end, call.finished_at)
            continue
        if group_agent is not None:
            steps.append(Step(group_agent, width))
        group_agent, group_end, width = agent, call.finished_at, 1
    if group_agent is not None:
        steps.append(Step(group_agent, width))
    return steps


def _by_session(calls: Iterable[CallRecord]) -> dict[str, list[CallRecord]]:
    sessions: dict[str, list[CallRecord]] = defaultdict(list)
    for call in calls:
        if call.session:
            sessions[call.session].append(call)
    return sessions


def layers(nodes: Sequence[str], forward: dict[str, Counter[str]]) -> dict[str, int]:
    """Longest-path layer of each node from the entry, over edges that are not loops."""
    layer = {n: 0 for n in nodes}
    for _ in range(len(nodes)):
        changed = False
        for src, dsts in forward.items():
            for dst in dsts:
                if layer[dst] < layer[src] + 1:
                    layer[dst] = layer[src] + 1
                    changed = True
        if not changed:
            break
    return layer


def loop_edges(entry: Counter[str], edges: dict[str, Counter[str]]) -> set[tuple[str, str]]:
    """Edges that close a cycle, found by depth-first search from the entry nodes."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    back: set[tuple[str, str]] = set()

    def visit(node: str) -> None:
        state[node] = 1
        for nxt, _ in edges.get(node, Counter()).most_common():
            if state.get(nxt) == 1:
                back.add((node, nxt))
            elif nxt not in state:
                visit(nxt)
        state[node] = 2

    for node, _ in entry.most_common():
        if node not in state:
            visit(node)
    for node in list(edges):
        if node not in state:
            visit(node)
    return back


def observed_graph(calls: Iterable[CallRecord]) -> dict[str, Any]:
    """The transition graph of a workflow type's sessions (``graph`` schema, source "observed")."""
    entry: Counter[str] = Counter()
    exits: Counter[str] = Counter()
    edges: dict[str, Counter[str]] = defaultdict(Counter)
    node_calls: Counter[str] = Counter()
    node_steps: Counter[str] = Counter()
    node_sessions: Counter[str] = Counter()
    widths: dict[str, list[int]] = defaultdict(list)
    paths: list[list[Step]] = []
    for session_calls in _by_session(calls).values():
        steps = session_steps(session_calls)
        paths.append(steps)
        entry[steps[0].agent] += 1
        exits[steps[-1].agent] += 1
        for a, b in pairwise(steps):
            edges[a.agent][b.agent] += 1
        for step in steps:
            node_calls[step.agent] += step.width
            node_steps[step.agent] += 1
            widths[step.agent].append(step.width)
        for agent in {s.agent for s in steps}:
            node_sessions[agent] += 1
    nodes = sorted(node_calls, key=lambda a: (-node_sessions[a], a))
    loops = loop_edges(entry, edges)
    forward: dict[str, Counter[str]] = {
        src: Counter({d: n for d, n in dsts.items() if (src, d) not in loops and d != src})
        for src, dsts in edges.items()
    }
    layer = layers(nodes, forward)
    out_total = {a: sum(edges[a].values()) + exits[a] for a in nodes}
    n_sessions = len(paths)
    edge_list: list[dict[str, Any]] = [
        {"src": None, "dst": a, "count": n, "p": n / n_sessions, "loop": False}
        for a, n in entry.most_common()
    ]
    for src in nodes:
        for dst, n in edges[src].most_common():
            edge_list.append({"src": src, "dst": dst, "count": n, "p": n / out_total[src],
                              "loop": (src, dst) in loops or src == dst})
        if exits[src]:
            edge_list.append({"src": src, "dst": None, "count": exits[src],
                              "p": exits[src] / out_total[src], "loop": False})
    node_list = [
        {
            "agent": a,
            "layer": layer[a],
            "calls": node_calls[a],
            "sessions": node_sessions[a],
            "visits_per_session": node_steps[a] / node_sessions[a],
            "fanout_mean": sum(widths[a]) / len(widths[a]),
            "fanout_max": max(widths[a]),
        }
        for a in nodes
    ]
    return {"source": "observed", "sessions": n_sessions, "nodes": node_list,
            "edges": edge_list, "regex": summarise_paths(paths)}


# --- the regular-expression summary -------------------------------------------------

def _token(step: Step) -> str:
    return f"{step.agent}[x]" if step.width > 1 else step.agent


def _compress(tokens: list[str], known: frozenset[tuple[str, ...]] = frozenset()
              ) -> list[tuple[tuple[str, ...], int]]:
    """Fold tandem repeats (a a a -> a{3}; a b a b -> (a b){2}) for units of 1 to 3 tokens.

    A unit in ``known`` (seen repeating in another session) is kept even when it occurs
    once here, so "p w r" and "p w r w r" share the shape "p (w r){n}".
    """
    out: list[tuple[tuple[str, ...], int]] = []
    i = 0
    while i < len(tokens):
        best_unit: tuple[str, ...] = (tokens[i],)
        best_count = 1
        for size in (1, 2, 3):
            unit = tuple(tokens[i:i + size])
            if len(unit) < size:
                break
            count = 1
            while tuple(tokens[i + count * size:i + (count + 1) * size]) == unit:
                count += 1
            if (count > 1 or unit in known) and count * size >= best_count * len(best_unit):
                best_unit, best_count = unit, count
        out.append((best_unit, best_count))
        i += best_count * len(best_unit)
    return out


def summarise_paths(paths: Sequence[Sequence[Step]]) -> str | None:
    """The most common session shape, with each repeat count widened to the range seen.

    ``planner researcher[x3] writer (reviewer writer){1,2}`` reads: a planner, three
    concurrent researchers, a writer, then one or two review rounds. Sessions of other
    shapes are counted in the trailing share.
    """
    if not paths:
        return None
    token_paths = [[_token(s) for s in steps] for steps in paths]
    known = frozenset(unit for tokens in token_paths for unit, count in _compress(tokens)
                      if count > 1 and len(unit) > 1)
    shapes: dict[tuple[tuple[str, ...], ...], list[list[int]]] = defaultdict(list)
    for tokens in token_paths:
        runs = _compress(tokens, known)
        shape = tuple(unit for unit, _ in runs)
        shapes[shape].append([count for _, count in runs])
    shape, counts = max(shapes.items(), key=lambda kv: (len(kv[1]), -len(kv[0])))
    widths: dict[str, list[int]] = defaultdict(list)
    for steps in paths:
        for step in steps:
            if step.width > 1:
                widths[f"{step.agent}[x]"].append(step.width)
    for token, seen in widths.items():  # "researcher[x]" -> "researcher[x2-4]"
        lo, hi = min(seen), max(seen)
        widths[token] = [lo, hi]

    def show(token: str) -> str:
        if token not in widths:
            return token
        lo, hi = widths[token]
        return token[:-1] + (f"{lo}]" if lo == hi else f"{lo}-{hi}]")

    parts: list[str] = []
    for i, unit in enumerate(shape):
        lo = min(c[i] for c in counts)
        hi = max(c[i] for c in counts)
        text = show(unit[0]) if len(unit) == 1 else "(" + " ".join(map(show, unit)) + ")"
        if hi > 1 or lo != 1:
            text += f"{{{lo}}}" if lo == hi else f"{{{lo},{hi}}}"
        parts.append(text)
    share = len(counts) / len(paths)
    summary = " ".join(parts)
    return summary if share == 1 else f"{summary}   ({share:.0%} of sessions)"
