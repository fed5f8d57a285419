"""The per-workflow automaton: transitions between agent steps, with loops and cost to go.

A session arrives as its *steps* (see ``steps.py``: a parallel fan-out is one step).
The automaton predicts the next step's agent from a *context* of the session's history. Several context models are learned side by side and scored on each
finished session before it is learned (prequential), so the choice between them is
measured, not assumed:

- ``markov``: the last agent only (the baseline every report contrasts with);
- ``order-k``: the last k agents, backing off to shorter histories when unseen;
- ``loop-k``: the last k agents plus how often the current agent has run in this
  session (the loop count), backing off to ``order-k``;
- ``sig-k``: the current agent with the finished step's *signature* (``signature.py``)
  and loop count, then without the loop count, then ``loop-k`` (no signature yet: a call
  still arriving). Longer histories with the signature split the evidence too thinly.

Counts are exponentially decayed per session (``half_life_sessions``) by growing the
weight of new sessions instead of shrinking old counts, so a changed workflow is
relearned without touching every entry. Each context also keeps the decayed mean of
the remaining steps and remaining critical-path work seen after it (cost to go), which
is what the predictor answers with; no chain is solved at predict time.
"""

from __future__ import annotations

from collections.abc import Sequence

from pythia_server.profiler.contexts import (
    ID_BITS,
    MAX_AGENT_IDS,
    MAX_LOOP_ORDER,
    CandidateSpec,
    ContextStats,
    backoff_chain,
    candidate_specs,
    choose,
    position_keys,
)
from pythia_server.profiler.signature import OUTPUT_BUCKETS, signature_of
from pythia_server.profiler.steps import Step
from pythia_server.profiler.types import END, OTHER_AGENT, START, UNKNOWN_AGENT

_RENORMALISE_ABOVE = 1e120
_TOP_BUCKET = OUTPUT_BUCKETS - 1
_NOT_ACTIONABLE = frozenset({OTHER_AGENT, UNKNOWN_AGENT})
COMPARE_ALL_FIRST = 64
COMPARE_EVERY = 4
START_ID = 1


class ContextModel:
    """Learns next-agent distributions for several context models of one workflow type."""

    def __init__(
        self, max_order: int, loop_count_cap: int, half_life_sessions: float, max_contexts: int, min_evidence: float = 1.0
    ) -> None:
        if not 1 <= loop_count_cap <= 31:
            raise ValueError("loop_count_cap must be in 1..31")
        self.specs = candidate_specs(max_order)
        self.max_order = max_order
        self._loop_orders = min(MAX_LOOP_ORDER, max_order)
        self._loop_cap = loop_count_cap
        self._growth = 2.0 ** (1.0 / half_life_sessions)
        self._weight = 1.0
        self._max_contexts = max_contexts
        self.min_evidence = min_evidence
        self.table: dict[int, ContextStats] = {}
        # The packed state (last max_order agent ids, visits) -> its contexts; bounded like the table.
        self._by_state: dict[int, tuple[tuple[ContextStats, ...], tuple[tuple[ContextStats, ...], ...]]] = {}
        self.ids: dict[str, int] = {START: START_ID}
        self.names: list[str] = ["", START]
        # Decayed prequential hits / trials per candidate.
        self.hits: dict[str, float] = {spec.name: 0.0 for spec in self.specs}
        self.trials: dict[str, float] = {spec.name: 0.0 for spec in self.specs}
        self.chosen: CandidateSpec = self.specs[0]
        self.sessions = 0

    def _id(self, agent: str) -> int:
        found = self.ids.get(agent)
        if found is None:
            if len(self.names) > MAX_AGENT_IDS:
                return 0  # unseen-like: shares no context with anything learned
            found = self.ids[agent] = len(self.names)
            self.names.append(agent)
        return found

    # -- prediction ------------------------------------------------------------
    def _pick(self, chain: list[ContextStats | None]) -> ContextStats | None:
        needed = self.min_evidence * self._weight
        fallback = None
        for stats in chain:
            if stats is not None and stats.total > 0.0:
                if stats.total >= needed:
                    return stats
                if fallback is None:
                    fallback = stats
        return fallback

    def lookup(
        self,
        history: Sequence[str],
        visits: int,
        spec: CandidateSpec | None = None,
        recall: str | None = None,
        output_tokens: int | None = None,
    ) -> ContextStats | None:
        """The most specific context with enough evidence for ``spec`` (default: chosen).

        ``history`` starts with START and ends with the current agent; ``visits`` is how
        often the current agent has run in the session. ``recall`` and ``output_tokens``
        make the current step's signature (``output_tokens`` None: the step has not
        finished, no signature).
        """
        spec = spec or self.chosen
        tail = history[-spec.order :]
        ids = [self.ids.get(a, 0) for a in tail]
        signature = 0
        if spec.signature and output_tokens is not None:
            signature = signature_of(self.ids.get(recall, 0) if recall is not None else 0, output_tokens)
        keys = position_keys(ids, min(visits, self._loop_cap), spec.order, spec.order if spec.loop else 0, signature)
        get = self.table.get
        return self._pick(backoff_chain(spec, *([get(k) for k in part] for part in keys)))

    # -- learning --------------------------------------------------------------
    def _contexts_for(
        self, ids: list[int], visits: int, signature: int, state: int
    ) -> tuple[tuple[ContextStats, ...], tuple[tuple[ContextStats, ...], ...]]:
        """The context stats at the end of ``ids``, created as needed and cached by ``state``.

        Returns (every one to update, each candidate's back-off chain, longest first).
        Stats are never removed from the table, so the cached chains stay valid. A
        context that the table cap keeps out is left out; such a state is not cached,
        so it is created once there is room.
        """
        parts: list[list[ContextStats | None]] = []
        complete = True
        for keys in position_keys(ids, visits, self.max_order, self._loop_orders, signature):
            out: list[ContextStats | None] = []
            for key in keys:
                stats = self.table.get(key)
                if stats is None and len(self.table) < self._max_contexts:
                    stats = self.table[key] = ContextStats()
                out.append(stats)
                complete = complete and stats is not None
            parts.append(out)
        chains = tuple(tuple(stats for stats in backoff_chain(spec, *parts) if stats is not None) for spec in self.specs)
        entry = (tuple(stats for part in parts for stats in part if stats is not None), chains)
        if complete:
            self._by_state[state] = entry
        return entry

    def learn(
        self,
        steps: Sequence[Step],
        ended: bool,
        recalls: Sequence[str | None] | None = None,
    ) -> dict[str, tuple[int, int]]:
        """Score the candidates on this session (before learning it), then learn it.

        ``recalls`` (``signature.py``; one per step) complete the steps' signatures.
        Returns each candidate's (hits, trials) on the session.
        """
        agents = [step.agent for step in steps]
        if not agents:
            return {}
        self._weight *= self._growth
        weight = self._weight
        specs = self.specs
        steps_total = len(agents)
        remaining_work = [0] * (steps_total + 1)
        total = 0
        for i in range(steps_total - 1, -1, -1):
            total += steps[i].max_output_tokens
            remaining_work[i] = total
        self._update((START_ID << 8) | 1, agents[0], weight, steps_total, remaining_work[0], ended)
        ids = [START_ID]
        seen: dict[str, int] = {}
        positions = steps_total if ended else steps_total - 1
        loop_cap = self._loop_cap
        # The state (step signature, last max_order ids, visit count) packed in an int.
        # START occurs only first, so a shorter history never packs like a longer one.
        window_mask = (1 << (ID_BITS * self.max_order)) - 1
        sig_shift = ID_BITS * self.max_order + 5
        packed = START_ID
        needed = self.min_evidence * weight
        chosen_index = specs.index(self.chosen)
        # All candidates are compared on every session while the model is young, then on
        # every COMPARE_EVERY-th one: the choice stays measured at a fraction of the cost.
        compare_all = self.sessions < COMPARE_ALL_FIRST or self.sessions % COMPARE_EVERY == 0
        hits = [0] * len(specs)
        agent_ids = self.ids
        contexts = self._by_state
        not_actionable = _NOT_ACTIONABLE
        nexts = [*agents[1:], END]
        for i in range(positions):
            agent = agents[i]
            agent_id = agent_ids.get(agent)
            if agent_id is None:
                agent_id = self._id(agent)
            ids.append(agent_id)
            packed = ((packed << ID_BITS) | agent_id) & window_mask
            seen[agent] = visits = seen.get(agent, 0) + 1
            if visits > loop_cap:  # noqa: PLR1730 - no builtin call in the per-step loop
                visits = loop_cap
            nxt = nexts[i]
            recall = recalls[i] if recalls is not None else None
            bucket = steps[i].max_output_tokens.bit_length()  # signature_of, inlined
            if bucket > _TOP_BUCKET:  # noqa: PLR1730 - as above
                bucket = _TOP_BUCKET
            signature = ((agent_ids.get(recall, 0) + 1 if recall is not None else 1) << 4) | bucket
            state = (signature << sig_shift) | (packed << 5) | visits
            entry = contexts.get(state)
            if entry is None:
                entry = self._contexts_for(ids, visits, signature, state)
            every, chains = entry
            if nxt not in not_actionable:  # naming "some agent" correctly is no usable prediction
                if compare_all:
                    for index, chain in enumerate(chains):
                        if choose(chain, needed) == nxt:
                            hits[index] += 1
                elif choose(chains[chosen_index], needed) == nxt:
                    hits[chosen_index] += 1
            if ended:
                steps_left, work_left = (steps_total - 1 - i) * weight, remaining_work[i + 1] * weight
                for stats in every:
                    counts = stats.counts
                    value = counts[nxt] = counts.get(nxt, 0.0) + weight
                    stats.total += weight
                    if nxt == stats.top:
                        stats.top_count = value
                    elif value > stats.top_count:
                        stats.top, stats.top_count = nxt, value
                    stats.steps_sum += steps_left
                    stats.work_sum += work_left
            else:
                for stats in every:
                    counts = stats.counts
                    value = counts[nxt] = counts.get(nxt, 0.0) + weight
                    stats.total += weight
                    if nxt == stats.top:
                        stats.top_count = value
                    elif value > stats.top_count:
                        stats.top, stats.top_count = nxt, value
                    stats.truncated_weight += weight
        compared = range(len(specs)) if compare_all else (chosen_index,)
        scores = {}
        for index in compared:
            name = specs[index].name
            scores[name] = (hits[index], positions)
            self.hits[name] += hits[index] * weight
            self.trials[name] += positions * weight
        self.sessions += 1
        best, best_accuracy = specs[0], -1.0
        for spec in specs:  # the most accurate; the earliest (simplest) of equals
            trials = self.trials[spec.name]
            accuracy = self.hits[spec.name] / trials if trials else 0.0
            if accuracy > best_accuracy:
                best, best_accuracy = spec, accuracy
        self.chosen = best
        if self._weight > _RENORMALISE_ABOVE:
            self._renormalise()
        return scores

    def _update(self, key: int, nxt: str, weight: float, steps_left: int, work_left: int, ended: bool) -> None:
        stats = self.table.get(key)
        if stats is None:
            if len(self.table) >= self._max_contexts:
                return  # bounded memory: known contexts keep learning, new ones wait
            stats = self.table[key] = ContextStats()
        stats.add(nxt, weight)
        if ended:
            stats.steps_sum += steps_left * weight
            stats.work_sum += work_left * weight
        else:
            stats.truncated_weight += weight

    def _renormalise(self) -> None:
        factor = 1.0 / self._weight
        for stats in self.table.values():
            stats.scale(factor)
        for name in self.hits:
            self.hits[name] *= factor
            self.trials[name] *= factor
        self._weight = 1.0

    def accuracy(self, name: str) -> float:
        return self.hits[name] / self.trials[name] if self.trials[name] else 0.0

    def edges(self, min_probability: float) -> tuple[tuple[str, str, float], ...]:
        """Last-agent transitions above the pruning threshold, for reports."""
        out = []
        mask = (1 << ID_BITS) - 1
        for key, stats in self.table.items():
            if key & 0xFF != 1:  # order 1 without a visit count
                continue
            source = self.names[(key >> 8) & mask]
            for nxt, p in stats.ranked:
                if p >= min_probability:
                    out.append((source, nxt, round(p, 4)))
        return tuple(sorted(out))
