"""KVFlow: evict by steps-to-execution from the agent step graph, prefetch the next step.

Reproduces Pan et al., "KVFlow: Efficient Prefix Caching for Accelerating LLM-Based
Multi-Agent Workflows" (arXiv 2507.07400; code PanZaifeng/KVFlow, built on SGLang's
hierarchical radix cache): the workflow's Agent Step Graph gives every agent a
*steps-to-execution* value (0 while it runs, 1 for the agents of the next step, and so
on); a cached prefix is worth the smallest value among the agents that use it (shared
prefixes in the tree take the minimum); eviction removes the largest values first, LRU
among equals; when an agent finishes, the prefixes of the agents due in the next step are
prefetched in the background so they are resident when those agents start.

The step graph comes from a ``WorkflowGraph`` (agent -> agents that run after it), which
the profiler will learn from traces; KVFlow takes it from the agent framework. A workflow
without a graph gets no hints (plain LRU), as KVFlow without workflow information.

Deviations: KVFlow's prefetch copies KV from host memory over PCIe while the GPU computes
(it costs no GPU time); we return ``PrefetchAction``s and the engine realises them, as a
host-tier load if it models one, else as a prefill-only request (which does cost compute).
The prefix to prefetch is what the policy has seen: the agent's last prompt in the session
if it ran before, otherwise its role prefix (the blocks common to all its prompts so far).
It is sent to the replica where the session's last call ran (KVFlow runs one engine).
Agents not reachable from the session's position, and sessions that ended, count as
not expected (evicted first). ``hold_step`` reproduces the code's eviction passes
(``HiRadixCache.evict`` with ``AgentManager``): values from ``hold_step - 1`` up, and
"not expected", form one tier evicted in LRU order; None (the default) keeps the paper's
uncapped order. ``prefetch_steps`` (1) is how many steps ahead prefetching looks.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import pairwise

from pythia_server.policy.types import CacheOwner, CallInfo, CallOutcome, PrefetchAction, RetentionHint

__all__ = ["KVFlowCacheHints", "WorkflowGraph"]


@dataclass(frozen=True, slots=True)
class WorkflowGraph:
    """A workflow's agent step graph: which agents may run right after each agent."""

    workflow: str
    successors: Mapping[str, tuple[str, ...]]

    @classmethod
    def chain(cls, workflow: str, agents: Iterable[str], loop: bool = False) -> WorkflowGraph:
        """A linear graph (optionally looping back to the first agent)."""
        order = list(agents)
        edges = {a: (b,) for a, b in pairwise(order)}
        if loop and order:
            edges[order[-1]] = (order[0],)
        return cls(workflow, edges)

    def steps_to_execution(self, running: Iterable[str], finished: Iterable[str]) -> dict[str, int]:
        """Steps until each reachable agent runs, from the agents running and just finished."""
        steps: dict[str, int] = {}
        queue: deque[str] = deque()
        sources = set(running) | set(finished)
        for agent in sources:
            for nxt in self.successors.get(agent, ()):
                if nxt not in steps:
                    steps[nxt] = 1
                    queue.append(nxt)
        while queue:
            agent = queue.popleft()
            for nxt in self.successors.get(agent, ()):
                if nxt not in steps:
                    steps[nxt] = steps[agent] + 1
                    queue.append(nxt)
        for agent in running:
            steps[agent] = 0
        return steps


@dataclass(slots=True)
class _Session:
    workflow: str
    running: dict[str, int] = field(default_factory=dict)  # agent -> calls in flight
    finished: set[str] = field(default_factory=set)  # agents done whose successors have not started
    last_prompt: dict[str, tuple[tuple[int, ...], int]] = field(default_factory=dict)  # agent -> (hashes, tokens)
    replica_id: str | None = None


class KVFlowCacheHints:
    """Steps-to-execution retention hints and next-step prefetches for every live session."""

    name = "kvflow"

    def __init__(
        self,
        graphs: Mapping[str, WorkflowGraph] | Iterable[WorkflowGraph] = (),
        block_size: int = 64,
        max_sessions: int = 100_000,
        hold_step: int | None = None,
        prefetch_steps: int = 1,
    ) -> None:
        if hold_step is not None and hold_step < 2:
            raise ValueError("hold_step must be at least 2 (or None for no cap)")
        if prefetch_steps < 1:
            raise ValueError("prefetch_steps must be at least 1")
        items = graphs.values() if isinstance(graphs, Mapping) else graphs
        self.graphs: dict[str, WorkflowGraph] = {g.workflow: g for g in items}
        self.block_size = block_size
        self.max_sessions = max_sessions
        self.hold_step = hold_step
        self.prefetch_steps = prefetch_steps
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._role_prefix: dict[tuple[str, str], tuple[int, ...]] = {}
        # Eviction asks for hints of many nodes at one moment: cache until the next event.
        self._steps_cache: dict[str, dict[str, int]] = {}
        self._shared_cache: dict[tuple[str | None, str], int | None] = {}

    def add_graph(self, graph: WorkflowGraph) -> None:
        """Install or replace a workflow's graph (the profiler calls this as it learns)."""
        self.graphs[graph.workflow] = graph
        self._steps_cache.clear()
        self._shared_cache.clear()

    # ----------------------------------------------------------------- queries
    def steps(self, session: str) -> dict[str, int]:
        """Steps-to-execution of every reachable agent of a live session."""
        cached = self._steps_cache.get(session)
        if cached is not None:
            return cached
        state = self._sessions.get(session)
        graph = self.graphs.get(state.workflow) if state else None
        if state is None or graph is None:
            return {}
        running = [a for a, n in state.running.items() if n > 0]
        result = graph.steps_to_execution(running, state.finished)
        self._steps_cache[session] = result
        return result

    def retention(self, owner: CacheOwner, now_s: float) -> RetentionHint | None:
        if owner.agent is None or owner.workflow not in self.graphs:
            return None
        if owner.session is not None:
            if owner.session not in self._sessions:
                return self._capped(None, owner.agent)  # ended or never seen: not expected
            value = self.steps(owner.session).get(owner.agent)
            return self._capped(value, owner.agent)
        key = (owner.workflow, owner.agent)
        if key not in self._shared_cache:  # a role prefix shared across sessions: the nearest decides
            values = [
                v
                for s, st in self._sessions.items()
                if st.workflow == owner.workflow and (v := self.steps(s).get(owner.agent)) is not None
            ]
            self._shared_cache[key] = min(values) if values else None
        return self._capped(self._shared_cache[key], owner.agent, " (shared)")

    def _capped(self, value: int | None, agent: str, note: str = "") -> RetentionHint | None:
        """KVFlow's hold_step: every value from hold_step - 1 up (and "never") evicts alike, LRU."""
        if self.hold_step is None:
            return None if value is None else RetentionHint(None, value, f"{agent} in {value} steps{note}")
        far = self.hold_step - 1
        steps = far if value is None else min(value, far)
        return RetentionHint(None, steps, f"{agent} in {value if value is not None else 'no'} steps{note}")

    # ----------------------------------------------------------------- events
    def on_start(self, call: CallInfo, replica_id: str, now_s: float) -> None:
        tags = call.tags
        if not (tags.session and tags.agent and tags.workflow):
            return
        state = self._session(tags.session, tags.workflow)
        self._invalidate(tags.session)
        graph = self.graphs.get(tags.workflow)
        if graph is not None:  # the agents that lead to this one have handed over
            state.finished = {a for a in state.finished if tags.agent not in graph.successors.get(a, ())}
        state.running[tags.agent] = state.running.get(tags.agent, 0) + 1
        state.last_prompt[tags.agent] = (tuple(call.block_hashes), call.prompt_tokens)
        state.replica_id = replica_id
        self._learn_role_prefix(tags.workflow, tags.agent, tuple(call.block_hashes))

    def on_finish(self, outcome: CallOutcome, now_s: float) -> tuple[PrefetchAction, ...]:
        tags = outcome.call.tags
        state = self._sessions.get(tags.session or "")
        if state is None or not tags.agent:
            return ()
        self._invalidate(tags.session or "")
        left = state.running.get(tags.agent, 0) - 1
        if left > 0:
            state.running[tags.agent] = left
        else:
            state.running.pop(tags.agent, None)
            state.finished.add(tags.agent)
        if left > 0 or state.workflow not in self.graphs:
            return ()
        actions = []
        for agent, value in sorted(self.steps(tags.session or "").items()):
            if not 1 <= value <= self.prefetch_steps:
                continue
            hashes, tokens = state.last_prompt.get(agent, ((), 0))
            if not hashes:
                hashes = self._role_prefix.get((state.workflow, agent), ())
                tokens = len(hashes) * self.block_size
            if hashes:
                owner = CacheOwner(state.workflow, tags.session, agent)
                actions.append(
                    PrefetchAction(outcome.replica_id, owner, hashes, tokens, now_s, f"{agent} runs next step")
                )
        return tuple(actions)

    def on_session_end(self, session: str, now_s: float) -> None:
        self._sessions.pop(session, None)
        self._invalidate(session)

    # ----------------------------------------------------------------- helpers
    def _invalidate(self, session: str) -> None:
        self._steps_cache.pop(session, None)
        self._shared_cache.clear()

    def _session(self, session: str, workflow: str) -> _Session:
        state = self._sessions.get(session)
        if state is None:
            state = _Session(workflow)
            self._sessions[session] = state
            while len(self._sessions) > self.max_sessions:
                dropped, _ = self._sessions.popitem(last=False)
                self._steps_cache.pop(dropped, None)
        self._sessions.move_to_end(session)
        return state

    def _learn_role_prefix(self, workflow: str, agent: str, hashes: tuple[int, ...]) -> None:
        key = (workflow, agent)
        known = self._role_prefix.get(key)
        if known is None:
            self._role_prefix[key] = hashes
            return
        if hashes[: len(known)] == known:
            return  # the usual case: the role prefix recurs whole
        common = 0
        for a, b in zip(known, hashes, strict=False):
            if a != b:
                break
            common += 1
        self._role_prefix[key] = known[:common]
