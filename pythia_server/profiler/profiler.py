"""The profiler's front door: the incremental facade the gateway and the replay feed.

Drivers call :meth:`WorkflowProfiler.observe` for every finished LLM call,
:meth:`WorkflowProfiler.end_session` when a session ends (the SDK's workflow span
closed, or an idle timeout), and :meth:`WorkflowProfiler.predict` on the request
path. Pure: no I/O, no clock reads (time arrives as ``now_s``), bounded memory.

Robustness, by construction:

- duplicated observations (same ``call_id``, or the same agent and times when there is
  none) are dropped; out-of-order ones are put in start order;
- a call without a workflow type or session cannot be attributed and is dropped
  (counted); the number of workflow types and of agents per type is capped;
- live sessions are capped and least-recently-seen ones are evicted: they are learned
  as truncated sessions (their transitions, but no session end);
- observations for a session that already ended are dropped (counted);
- predictions never raise: an unknown type or session gets an honest "unknown" answer.
"""

from __future__ import annotations

from collections import OrderedDict

from pythia_server.profiler.predictor import LiveSession, WorkflowModel
from pythia_server.profiler.types import (
    CallObservation,
    Prediction,
    ProfilerConfig,
    ProfilerSnapshot,
)

__all__ = ["WorkflowProfiler"]


class WorkflowProfiler:
    """Learns every workflow type it is fed and predicts live sessions of them."""

    def __init__(self, config: ProfilerConfig | None = None) -> None:
        self.config = config or ProfilerConfig()
        self.learning = True  # False: sessions still end, but nothing is learned (frozen evaluation)
        self._models: dict[str, WorkflowModel] = {}
        self._live: OrderedDict[tuple[str, str], LiveSession] = OrderedDict()
        self._ended: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.dropped_observations = 0
        self.evicted_sessions = 0
        self._max_calls = self.config.max_calls_per_session

    # -- feeding ---------------------------------------------------------------
    def observe(self, call: CallObservation) -> None:
        """Record one finished call of a live session."""
        workflow, session = call.workflow, call.session
        if not workflow or not session:
            self.dropped_observations += 1
            return
        key = (workflow, session)
        live = self._live.get(key)
        if live is None:
            model = self._model(workflow, create=True)
            if key in self._ended or model is None:
                self.dropped_observations += 1
                return
            live = self._live[key] = LiveSession(workflow, session)
            if len(self._live) > self.config.max_live_sessions:
                self._evict_oldest()
        else:
            self._live.move_to_end(key)
            model = self._models[workflow]
        identity: object = call.call_id or (call.agent, call.start_s, call.end_s, call.prompt_tokens, call.output_tokens)
        seen = live.seen
        if identity in seen or len(seen) >= self._max_calls:
            self.dropped_observations += 1
            return
        seen.add(identity)
        agent = call.agent
        live.add(call, agent if agent in model.known_agents else model.agent_name(agent))

    def end_session(self, workflow: str | None, session: str | None, now_s: float) -> None:
        """The session finished: learn it whole (if learning) and forget its live state."""
        if not workflow or not session:
            return
        key = (workflow, session)
        live = self._live.pop(key, None)
        if live is None:
            return
        self._ended[key] = None
        if len(self._ended) > self.config.max_recently_ended:
            self._ended.popitem(last=False)
        model = self._models.get(workflow)
        if model is not None and self.learning:
            model.learn(live.calls, True, live.steps, live.agents)

    def _evict_oldest(self) -> None:
        _, live = self._live.popitem(last=False)
        self.evicted_sessions += 1
        model = self._models.get(live.workflow)
        if model is not None and self.learning:
            model.learn(live.calls, False, live.steps, live.agents)

    def _model(self, workflow: str, create: bool) -> WorkflowModel | None:
        model = self._models.get(workflow)
        if model is None and create and len(self._models) < self.config.max_workflows:
            model = self._models[workflow] = WorkflowModel(workflow, self.config)
        return model

    # -- asking ----------------------------------------------------------------
    def predict(self, workflow: str | None, session: str | None, agent: str | None = None, now_s: float = 0.0) -> Prediction:
        """Predictions for a live session (see :meth:`WorkflowModel.predict`).

        Returned in every mode; policies act on them only when ``prediction.proactive``.
        """
        model = self._models.get(workflow) if workflow else None
        if model is None or not workflow:
            return Prediction(workflow, session, agent, mode="unknown", reason="unknown workflow type")
        live = self._live.get((workflow, session)) if session else None
        return model.predict(live, agent, session, now_s)

    def mode(self, workflow: str | None) -> str:
        model = self._models.get(workflow) if workflow else None
        return model.modes.mode if model is not None else "unknown"

    def model(self, workflow: str) -> WorkflowModel | None:
        """The learned model of one type (reports and tests read it; do not mutate)."""
        return self._models.get(workflow)

    @property
    def live_sessions(self) -> int:
        return len(self._live)

    def snapshot(self) -> ProfilerSnapshot:
        return ProfilerSnapshot(
            live_sessions=len(self._live),
            dropped_observations=self.dropped_observations,
            workflows=tuple(m.snapshot() for _, m in sorted(self._models.items())),
        )
