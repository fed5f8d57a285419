"""Prompt composition: which prefix segments of an agent's prompt recur, and where from.

Three candidate sources for the prefix of the next call of agent X in session S:

- ``role``: X's prompt that recurs across sessions (system prompt, tool schemas): the
  common prefix of X's first calls in different sessions that start with the same
  block (its *root*);
- ``history``: X's own previous prompt in S (a conversation that grows);
- ``shared``: the previous call's prompt in S, whatever its agent (context handed on
  inside a session, e.g. one phase of a chat chain).

For each agent the composition learns how much of the actual prompt each source
matched (a fraction of its blocks) and predicts with the best one available. Hashes
are chained, so a matching prefix is a matching token prefix.
"""

from __future__ import annotations

from collections.abc import Sequence

from pythia_server.profiler.types import PrefixPrediction

KINDS = ("history", "shared", "role")
_MAX_ROOTS_PER_AGENT = 16


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two chained block-hash sequences.

    Chained hashes (block i's hash covers every token before it, as the gateway's
    ``block_hashes`` and Mooncake ``hash_ids`` are) agree at i only if they agree on
    the whole prefix, so equality is monotone and a binary search suffices.
    """
    lo, hi = 0, min(len(a), len(b))
    if hi == 0 or a[0] != b[0]:
        return 0
    if a[hi - 1] == b[hi - 1]:
        return hi
    lo = 1  # a[lo - 1] == b[lo - 1] holds; a[hi - 1] != b[hi - 1]
    while lo < hi - 1:
        mid = (lo + hi) // 2
        if a[mid - 1] == b[mid - 1]:
            lo = mid
        else:
            hi = mid
    return lo


class _RoleRoot:
    __slots__ = ("prefix", "sessions")

    def __init__(self, prefix: tuple[int, ...]) -> None:
        self.prefix = prefix
        self.sessions = 1


class _AgentComposition:
    __slots__ = ("calls", "hit_sum", "prompt_blocks_sum", "role", "roots", "trials")

    def __init__(self) -> None:
        self.role: tuple[int, ...] = ()  # cached role_prefix(), refreshed when roots change
        self.roots: dict[int, _RoleRoot] = {}
        self.hit_sum = [0.0, 0.0, 0.0]  # by KINDS index
        self.trials = [0, 0, 0]
        self.prompt_blocks_sum = 0
        self.calls = 0

    def role_prefix(self) -> tuple[int, ...]:
        """The common prefix of the most seen root, once seen in two sessions."""
        best = max(self.roots.values(), key=lambda r: r.sessions, default=None)
        return best.prefix if best is not None and best.sessions >= 2 else ()


class PrefixComposition:
    """Per-agent prefix statistics of one workflow type. Pure and bounded."""

    def __init__(self, max_agents: int, max_prefix_blocks: int) -> None:
        self._agents: dict[str, _AgentComposition] = {}
        self._max_agents = max_agents
        self._max_blocks = max_prefix_blocks

    def observe_session(self, prompts: Sequence[tuple[str, tuple[int, ...]]]) -> None:
        """Learn from one session's (agent, prompt block hashes), in start order: for
        each call, how well each source would have named its prefix."""
        last_by_agent: dict[str, tuple[int, ...]] = {}
        last_any: tuple[int, ...] | None = None
        agents, max_blocks = self._agents, self._max_blocks
        for agent, hashes in prompts:
            if not hashes:
                continue
            comp = agents.get(agent)
            if comp is None:
                if len(agents) >= self._max_agents:
                    continue
                comp = agents[agent] = _AgentComposition()
            if len(hashes) > max_blocks:
                hashes = hashes[:max_blocks]
            previous = last_by_agent.get(agent)
            n = len(hashes)
            comp.calls += 1
            comp.prompt_blocks_sum += n
            hit_sum, trials = comp.hit_sum, comp.trials
            first = hashes[0]
            # common_prefix_length, with its two usual answers (no shared first block, one
            # prompt a prefix of the other) decided inline: this runs for every call.
            history_length = -1
            if previous:
                if previous[0] != first:
                    history_length = 0
                else:
                    m = min(len(previous), n)
                    history_length = m if previous[m - 1] == hashes[m - 1] else common_prefix_length(previous, hashes)
                hit_sum[0] += history_length / n
                trials[0] += 1
            if last_any:
                # The previous call is often this agent's own: its prompt is measured once.
                if last_any is previous:
                    length = history_length
                elif last_any[0] != first:
                    length = 0
                else:
                    m = min(len(last_any), n)
                    length = m if last_any[m - 1] == hashes[m - 1] else common_prefix_length(last_any, hashes)
                hit_sum[1] += length / n
                trials[1] += 1
            role = comp.role
            if role:
                if role[0] == first:
                    m = min(len(role), n)
                    hit_sum[2] += (m if role[m - 1] == hashes[m - 1] else common_prefix_length(role, hashes)) / n
                trials[2] += 1
            if previous is None:
                self._learn_role(comp, hashes)
                comp.role = comp.role_prefix()
            last_by_agent[agent] = last_any = hashes

    def observe(
        self,
        agent: str,
        hashes: tuple[int, ...],
        last_same_agent: tuple[int, ...] | None,
        last_any: tuple[int, ...] | None,
        first_in_session: bool,
    ) -> None:
        """Learn from one call: how well each source would have named its prefix.

        The one-call form of :meth:`observe_session` (which learns the same, faster).
        """
        if not hashes:
            return
        comp = self._agents.get(agent)
        if comp is None:
            if len(self._agents) >= self._max_agents:
                return
            comp = self._agents[agent] = _AgentComposition()
        hashes = hashes[: self._max_blocks]
        n = len(hashes)
        comp.calls += 1
        comp.prompt_blocks_sum += n
        history_length = -1
        if last_same_agent:
            history_length = common_prefix_length(last_same_agent, hashes)
            comp.hit_sum[0] += history_length / n
            comp.trials[0] += 1
        if last_any:
            length = history_length if last_any is last_same_agent else common_prefix_length(last_any, hashes)
            comp.hit_sum[1] += length / n
            comp.trials[1] += 1
        if comp.role:
            comp.hit_sum[2] += common_prefix_length(comp.role, hashes) / n
            comp.trials[2] += 1
        if first_in_session:
            self._learn_role(comp, hashes)
            comp.role = comp.role_prefix()

    def _learn_role(self, comp: _AgentComposition, hashes: tuple[int, ...]) -> None:
        root = comp.roots.get(hashes[0])
        if root is None:
            if len(comp.roots) >= _MAX_ROOTS_PER_AGENT:
                rarest = min(comp.roots, key=lambda h: comp.roots[h].sessions)
                del comp.roots[rarest]
            comp.roots[hashes[0]] = _RoleRoot(hashes)
            return
        root.prefix = root.prefix[: common_prefix_length(root.prefix, hashes)]
        root.sessions += 1

    def role_blocks(self, agent: str) -> int:
        """Blocks of ``agent``'s role prefix (0 until seen in two sessions)."""
        comp = self._agents.get(agent)
        return len(comp.role) if comp is not None else 0

    def predict(
        self,
        agent: str,
        last_same_agent: tuple[int, ...] | None,
        last_any: tuple[int, ...] | None,
        block_size: int,
    ) -> PrefixPrediction:
        """The best available source for agent's next prefix, with its learned hit rate."""
        comp = self._agents.get(agent)
        role = comp.role if comp is not None else ()
        sources = {"history": last_same_agent, "shared": last_any, "role": role}
        best: PrefixPrediction = PrefixPrediction("none")
        for index, kind in enumerate(KINDS):
            source = sources[kind]
            if not source:
                continue
            expected = comp.hit_sum[index] / comp.trials[index] if comp is not None and comp.trials[index] else 0.0
            if best.kind == "none" or expected > best.expected_hit_fraction:
                best = PrefixPrediction(kind, tuple(source), len(source) * block_size, round(expected, 4))
        return best

    def summary(self) -> dict[str, dict[str, float]]:
        """Per agent: mean prompt blocks, role prefix blocks, mean hit fraction per source."""
        out: dict[str, dict[str, float]] = {}
        for agent, comp in sorted(self._agents.items()):
            row = {
                "calls": float(comp.calls),
                "prompt_blocks_mean": comp.prompt_blocks_sum / comp.calls if comp.calls else 0.0,
                "role_prefix_blocks": float(len(comp.role_prefix())),
            }
            for index, kind in enumerate(KINDS):
                row[f"{kind}_hit"] = round(comp.hit_sum[index] / comp.trials[index], 4) if comp.trials[index] else 0.0
            out[agent] = row
        return out
