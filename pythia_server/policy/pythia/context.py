"""What Pythia's policies share: the profiler they feed and what they know of live sessions.

The runner and the gateway tell each policy of a bundle about the same events (a call
routed, a call finished, a session ended). Every policy passes them on here; the context
records each event once (keyed by call id), so the profiler sees every finished call
exactly once whichever policy heard of it first, and an ablation that switches one
mechanism off still feeds the others.

Predictions are acted on only for workflow types the profiler has promoted to
proactive: ``predict_call`` and ``predict_next`` answer None otherwise, and every
policy falls back to its reactive default (shadow mode).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from pythia_server.policy.pythia.config import PythiaConfig
from pythia_server.policy.types import CallInfo, CallOutcome, ReplicaView
from pythia_server.profiler.profiler import WorkflowProfiler
from pythia_server.profiler.types import CallObservation, Prediction

__all__ = ["PythiaContext", "SessionState"]


@dataclass(slots=True)
class SessionState:
    """One live session as the policies know it."""

    workflow: str
    started_s: float = 0.0
    in_flight: dict[str, tuple[str, float]] = field(default_factory=dict)  # call id -> (agent, start_s)
    last_replica: str | None = None
    agent_replica: dict[str, str] = field(default_factory=dict)  # agent -> replica of its last call
    agent_prompt_tokens: dict[str, int] = field(default_factory=dict)
    next: Prediction | None = None  # what follows the last finished step (proactive only)
    next_at_s: float = 0.0  # when ``next`` was made
    last_finish_s: float = 0.0
    last_agent: str | None = None  # the agent of the last finished call

    def running(self, agent: str | None) -> bool:
        return any(a == agent for a, _ in self.in_flight.values())


class PythiaContext:
    """The bundle's shared state. Pure: told events with their times, never reads a clock."""

    def __init__(
        self,
        config: PythiaConfig | None = None,
        profiler: WorkflowProfiler | None = None,
        feed_profiler: bool = True,
    ) -> None:
        self.config = config or PythiaConfig()
        self.profiler = profiler if profiler is not None else WorkflowProfiler()
        self.feed_profiler = feed_profiler
        self.sessions: OrderedDict[str, SessionState] = OrderedDict()
        self.ended: OrderedDict[str, str] = OrderedDict()  # session -> workflow, recently ended
        self.views: dict[str, ReplicaView] = {}  # the latest view of each replica the router saw
        self.warm_targets: dict[tuple[str, str], tuple[str, int]] = {}  # (session, agent) -> (replica, tokens)
        self._finished: OrderedDict[str, None] = OrderedDict()  # call ids already recorded
        self._memo: tuple[str, float, Prediction | None] | None = None

    # ------------------------------------------------------------------ events
    def saw_replicas(self, replicas: Sequence[ReplicaView]) -> None:
        for view in replicas:
            self.views[view.replica_id] = view

    def started(self, call: CallInfo, replica_id: str, now_s: float) -> SessionState | None:
        """A call was routed to ``replica_id`` (idempotent per call id)."""
        tags = call.tags
        if not (tags.workflow and tags.session) or tags.session in self.ended:
            return None
        start_s = call.arrival_s if call.arrival_s > 0.0 else now_s
        state = self.sessions.get(tags.session)
        if state is None:
            state = self.sessions[tags.session] = SessionState(tags.workflow, started_s=start_s)
            self._trim(self.sessions)
        self.sessions.move_to_end(tags.session)
        agent = tags.agent or ""
        state.in_flight.setdefault(call.call_id, (agent, start_s))
        state.last_replica = replica_id
        state.agent_replica[agent] = replica_id
        state.agent_prompt_tokens[agent] = call.prompt_tokens
        return state

    def finished(self, outcome: CallOutcome, now_s: float) -> SessionState | None:
        """A call ended: feed the profiler once, refresh the session's next-step prediction."""
        call = outcome.call
        if call.call_id in self._finished:
            return self.sessions.get(call.tags.session or "")
        self._finished[call.call_id] = None
        self._trim(self._finished)
        tags = call.tags
        state = self.sessions.get(tags.session or "")
        if state is None or not tags.workflow:
            return None
        _, start_s = state.in_flight.pop(call.call_id, (tags.agent or "", call.arrival_s))
        if self.feed_profiler:
            self.profiler.observe(CallObservation(
                workflow=tags.workflow, session=tags.session, agent=tags.agent,
                start_s=min(start_s, call.arrival_s) if call.arrival_s > 0.0 else start_s,
                end_s=outcome.finished_s, prompt_tokens=outcome.prompt_tokens,
                output_tokens=outcome.output_tokens, cached_tokens=outcome.cached_tokens,
                parent=tags.parent, call_id=call.call_id, block_hashes=call.block_hashes,
                block_size=self.config.block_size,
            ))
        state.last_finish_s = now_s
        state.last_agent = tags.agent or ""
        state.next = self.predict_next(tags.workflow, tags.session, now_s)
        state.next_at_s = now_s
        self._memo = None
        return state

    def end_session(self, session: str, now_s: float) -> SessionState | None:
        """The session is over: learn it, forget its live state, remember that it ended."""
        state = self.sessions.pop(session, None)
        if state is None:
            return None
        self.ended[session] = state.workflow
        self._trim(self.ended)
        if self.feed_profiler:
            self.profiler.end_session(state.workflow, session, now_s)
        self._memo = None
        return state

    # ------------------------------------------------------------------ questions
    def proactive(self, workflow: str | None) -> bool:
        return bool(workflow) and self.profiler.mode(workflow) == "proactive"

    def predict_call(self, call: CallInfo, now_s: float) -> Prediction | None:
        """The profiler's view of a call arriving now; None unless its type is proactive."""
        memo = self._memo
        if memo is not None and memo[0] == call.call_id and memo[1] == now_s:
            return memo[2]
        tags = call.tags
        prediction: Prediction | None = None
        if tags.workflow and tags.session:
            p = self.profiler.predict(tags.workflow, tags.session, tags.agent, now_s)
            prediction = p if p.proactive else None
        self._memo = (call.call_id, now_s, prediction)
        return prediction

    def predict_next(self, workflow: str | None, session: str | None, now_s: float) -> Prediction | None:
        """What follows the session's last finished step; None unless proactive."""
        if not (workflow and session):
            return None
        p = self.profiler.predict(workflow, session, None, now_s)
        return p if p.proactive else None

    def output_tokens(self, call: CallInfo, prediction: Prediction | None) -> int:
        """Predicted output: the agent's bound when proactive, else what the request allows."""
        if prediction is not None and prediction.output_bound_tokens is not None:
            bound = prediction.output_bound_tokens
            return min(bound, call.max_tokens) if call.max_tokens else bound
        return call.max_tokens if call.max_tokens else self.config.default_output_tokens

    def _trim(self, table: OrderedDict) -> None:  # type: ignore[type-arg]
        while len(table) > self.config.max_sessions:
            table.popitem(last=False)
