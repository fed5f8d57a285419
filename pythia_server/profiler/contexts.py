"""What a context of the automaton is: its packed key, its decayed statistics, back-off chains.

Split from ``automaton.py`` (``ContextModel``: learning, the prequential comparison,
renormalising), which builds on these. A context is the end of a session's history
(the last k agents, optionally the loop count and the finished step's signature) packed
in an int; each candidate model backs off from its most specific context to shorter ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ID_BITS",
    "MAX_AGENT_IDS",
    "MAX_LOOP_ORDER",
    "CandidateSpec",
    "ContextStats",
    "backoff_chain",
    "candidate_specs",
    "choose",
    "position_keys",
]

# Context keys are ints: the last k agent ids packed 10 bits each, then the visit count
# (0 for plain contexts) and k in the low byte. Cheap to build and hash on every step.
ID_BITS = 10
MAX_AGENT_IDS = (1 << ID_BITS) - 1
MAX_LOOP_ORDER = 3
# A signature (>= 16: see signature_of) sits above any packed history, so signature keys
# never equal plain or loop keys.
_SIG_SHIFT = ID_BITS * 7 + 8
_MAX_RANKED = 8


class ContextStats:
    """Decayed counts of the next agent after one context, plus cost to go.

    ``ranked`` (the normalised distribution, most likely first) is rebuilt at most once
    per update, on first use, so a burst of learning does not sort on every step.
    """

    __slots__ = ("_ranked", "_ranked_total", "counts", "steps_sum", "top", "top_count", "total", "truncated_weight", "work_sum")

    def __init__(self) -> None:
        self.counts: dict[str, float] = {}
        self.total = 0.0
        self.top = ""
        self.top_count = 0.0
        self.steps_sum = 0.0
        self.work_sum = 0.0
        self.truncated_weight = 0.0  # learned from sessions cut short (no cost to go)
        self._ranked: tuple[tuple[str, float], ...] = ()
        self._ranked_total = -1.0  # the total ``_ranked`` was computed at

    def add(self, nxt: str, weight: float) -> None:
        counts = self.counts
        value = counts.get(nxt, 0.0) + weight
        counts[nxt] = value
        self.total += weight
        if nxt == self.top:
            self.top_count = value
        elif value > self.top_count:
            self.top, self.top_count = nxt, value

    @property
    def ended_weight(self) -> float:
        """Weight of the sessions that ended: what ``steps_sum`` and ``work_sum`` average over."""
        return self.total - self.truncated_weight

    @property
    def ranked(self) -> tuple[tuple[str, float], ...]:
        if self._ranked_total != self.total:
            self._ranked_total = self.total
            total = self.total or 1.0
            items = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:_MAX_RANKED]
            self._ranked = tuple((agent, count / total) for agent, count in items)
        return self._ranked

    def scale(self, factor: float) -> None:
        for key in self.counts:
            self.counts[key] *= factor
        self.total *= factor
        self.top_count *= factor
        self.steps_sum *= factor
        self.work_sum *= factor
        self.truncated_weight *= factor
        self._ranked_total = -1.0


@dataclass(frozen=True, slots=True)
class CandidateSpec:
    name: str
    order: int
    loop: bool
    signature: bool = False


def candidate_specs(max_order: int) -> tuple[CandidateSpec, ...]:
    specs = [CandidateSpec("markov", 1, False)]
    specs += [CandidateSpec(f"order-{k}", k, False) for k in range(2, max_order + 1)]
    specs += [CandidateSpec(f"loop-{k}", k, True) for k in range(1, min(MAX_LOOP_ORDER, max_order) + 1)]
    top_loop = min(MAX_LOOP_ORDER, max_order)
    specs.append(CandidateSpec(f"sig-{top_loop}", top_loop, True, True))
    return tuple(specs)


def choose(chain: tuple[ContextStats, ...], needed: float) -> str | None:
    """The top agent of the first context in ``chain`` with ``needed`` evidence, else of
    the first seen one (what ``automaton.ContextModel._pick`` gives, on a precomputed chain)."""
    fallback = None
    for stats in chain:
        total = stats.total
        if total >= needed and total > 0.0:
            return stats.top
        if fallback is None and total > 0.0:
            fallback = stats.top
    return fallback


def position_keys(
    ids: Sequence[int], visits: int, max_order: int, loop_orders: int, signature: int = 0
) -> tuple[list[int], list[int], list[int], list[int]]:
    """Keys at the end of ``ids``: plain (orders 1..K) and loop (1..L); with a signature
    (0: none) also the current agent + signature + loop count, and agent + signature."""
    plain: list[int] = []
    loop: list[int] = []
    packed = 0
    n = len(ids)
    for k in range(1, min(max_order, n) + 1):
        packed |= ids[n - k] << (ID_BITS * (k - 1))
        plain.append((packed << 8) | k)
        if k <= loop_orders:
            loop.append((packed << 8) | (visits << 3) | k)
    if not signature or not ids:
        return plain, loop, [], []
    high = (signature << _SIG_SHIFT) | (ids[-1] << 8) | 1
    return plain, loop, [high | (visits << 3)], [high]


def backoff_chain(spec: CandidateSpec, plain: list, loop: list, sig_loop: list, sig_plain: list) -> list:
    """A candidate's back-off chain, most specific first (see the module docstring)."""
    k = spec.order
    chain = plain[:k][::-1]
    if spec.loop:
        chain = loop[:k][::-1] + chain
    if spec.signature:
        chain = sig_loop + sig_plain + chain  # of the current agent only
    return chain
