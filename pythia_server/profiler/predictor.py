"""One workflow type's learned model and the predictions made from it.

:class:`WorkflowModel` owns the automaton, the per-agent output samples, the
per-transition delays, the prompt composition and the shadow/proactive tracker of one
workflow type. It learns a whole session at a time (when the session ends, or is
evicted), scoring it first, so validation never sees its own data. Everything a
prediction needs is precomputed there; :meth:`WorkflowModel.predict` only looks up.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from pythia_server.profiler.automaton import ContextModel
from pythia_server.profiler.bounds import OutputSamples
from pythia_server.profiler.composition import PrefixComposition
from pythia_server.profiler.modes import ModeTracker, SessionScore
from pythia_server.profiler.regex import RegexSummary
from pythia_server.profiler.signature import RecallTracker, session_recalls
from pythia_server.profiler.steps import Step, extend_steps, group_steps
from pythia_server.profiler.types import (
    END,
    OTHER_AGENT,
    START,
    UNKNOWN_AGENT,
    CallObservation,
    Prediction,
    PrefixPrediction,
    ProfilerConfig,
    WorkflowSnapshot,
)

_MAX_TRANSITIONS = 4096
# Prompt composition and transition delays are means and medians: every session of a
# young type feeds them, then a deterministic sample (every SAMPLE_EVERY-th session),
# which estimates them as well at a fraction of the cost. Automaton, output bounds and
# the regex summary learn from every session.
SAMPLE_ALL_FIRST = 64
SAMPLE_EVERY = 4
_DELAY_SAMPLES = 256


class LiveSession:
    """What the profiler holds of one running session: its calls in start order, and
    the state predictions read (step history, visit counts, latest prompts)."""

    __slots__ = (
        "agents",
        "block_size",
        "calls",
        "history",
        "last_end_s",
        "last_prompt",
        "last_prompt_by_agent",
        "recall",
        "seen",
        "session",
        "step_of",
        "steps",
        "visits",
        "workflow",
    )

    def __init__(self, workflow: str, session: str) -> None:
        self.workflow = workflow
        self.session = session
        self.calls: list[CallObservation] = []
        self.seen: set[object] = set()
        self.steps: list[Step] = []
        self.history: list[str] = []  # step agents, START excluded
        self.visits: dict[str, int] = {}
        self.last_end_s: float | None = None
        self.last_prompt: tuple[int, ...] | None = None
        self.last_prompt_by_agent: dict[str, tuple[int, ...]] = {}
        self.block_size = 64
        self.agents: list[str] = []  # the agent name each call (in start order) is learned under
        self.step_of: list[int] = []  # index of the step each call (in start order) belongs to
        self.recall = RecallTracker()  # brought up to date when a prediction needs it

    def add(self, call: CallObservation, agent: str) -> None:
        """Add a call. In start order this is O(1); a call that started earlier than the
        last one (calls are observed when they end) re-groups only the steps after it."""
        calls = self.calls
        start_s = call.start_s
        if not calls or start_s > calls[-1].start_s or (start_s == calls[-1].start_s and call.end_s >= calls[-1].end_s):
            # In start order (the usual case): _extend, inlined.
            calls.append(call)
            self.agents.append(agent)
            steps = self.steps
            if extend_steps(steps, call, agent):
                self.history.append(agent)
                self.visits[agent] = self.visits.get(agent, 0) + 1
            self.step_of.append(len(steps) - 1)
            if self.last_end_s is None or call.end_s > self.last_end_s:
                self.last_end_s = call.end_s
            if call.block_hashes:
                self.last_prompt = call.block_hashes
                self.last_prompt_by_agent[agent] = call.block_hashes
                self.block_size = call.block_size
            return
        position = bisect.bisect_right(calls, (call.start_s, call.end_s), key=_start_order)
        calls.insert(position, call)
        self.agents.insert(position, agent)
        self.step_of.insert(position, -1)
        step = self.step_of[position - 1] if position > 0 else 0
        first = position
        while first > 0 and self.step_of[first - 1] >= step:
            first -= 1
        self.recall.reset()
        for name in self.history[step:]:
            self.visits[name] -= 1
        del self.steps[step:]
        del self.history[step:]
        for index in range(first, len(calls)):
            self._extend(index, calls[index], self.agents[index])

    def _extend(self, index: int, call: CallObservation, agent: str) -> None:
        if extend_steps(self.steps, call, agent):
            self.history.append(agent)
            self.visits[agent] = self.visits.get(agent, 0) + 1
        self.step_of[index] = len(self.steps) - 1
        if self.last_end_s is None or call.end_s > self.last_end_s:
            self.last_end_s = call.end_s
        if call.block_hashes:
            self.last_prompt = call.block_hashes
            self.last_prompt_by_agent[agent] = call.block_hashes
            self.block_size = call.block_size


def _start_order(call: CallObservation) -> tuple[float, float]:
    return (call.start_s, call.end_s)


class WorkflowModel:
    """Everything learned about one workflow type."""

    def __init__(self, name: str, config: ProfilerConfig) -> None:
        self.name = name
        self.config = config
        self.automaton = ContextModel(
            config.max_order,
            config.loop_count_cap,
            config.half_life_sessions,
            config.max_contexts_per_workflow,
            config.min_context_evidence,
        )
        self.regex = RegexSummary()
        self.composition = PrefixComposition(config.max_agents_per_workflow, config.max_prefix_blocks)
        self.modes = ModeTracker(
            config.validation_sessions,
            config.min_validation_sessions,
            config.promote_top1,
            config.promote_coverage,
            config.drift_sessions,
            config.demote_top1,
            config.demote_coverage,
        )
        self.known_agents: set[str] = set()
        self.samples: dict[str, OutputSamples] = {}
        # Each agent's current bound (None: too few samples), what scoring and predict read;
        # the full OutputBound summary is built only for snapshots.
        self.bound_tokens: dict[str, int | None] = {}
        self.delays_ms: dict[tuple[str, str], OutputSamples] = {}
        self.median_delay_s: dict[tuple[str, str], float] = {}  # precomputed for predict
        self.width_sum: dict[str, float] = {}
        self.width_steps: dict[str, int] = {}
        self.mean_width: dict[str, float] = {}
        self.sessions_learned = 0
        self.calls_learned = 0

    # -- agent names -----------------------------------------------------------
    def agent_name(self, agent: str | None) -> str:
        """The name learned under: unknown and over-the-cap agents share one token each.

        The first ``max_agents_per_workflow`` names seen are admitted for good.
        """
        if not agent:
            return UNKNOWN_AGENT
        if agent in self.known_agents:
            return agent
        if len(self.known_agents) < self.config.max_agents_per_workflow:
            self.known_agents.add(agent)
            return agent
        return OTHER_AGENT

    def _name_for_lookup(self, agent: str) -> str:
        """Like :meth:`agent_name` but never admits a name: predicting stays read-only."""
        if agent in self.known_agents:
            return agent
        return OTHER_AGENT if len(self.known_agents) >= self.config.max_agents_per_workflow else agent

    # -- learning --------------------------------------------------------------
    def learn(
        self,
        calls: Sequence[CallObservation],
        ended: bool,
        steps: Sequence[Step] | None = None,
        agents: Sequence[str] | None = None,
    ) -> None:
        """Score then learn one session (``ended`` False: truncated, no end transition).

        A live session passes its calls already in start order with their ``steps`` and
        ``agents`` (the name each call is learned under), so nothing is grouped twice.
        """
        if not calls:
            return
        ordered: Sequence[CallObservation] = calls
        if steps is None or agents is None:
            ordered = sorted(calls, key=_start_order)
            agents = [self.agent_name(c.agent) for c in ordered]
            steps = group_steps(ordered, {id(c): a for c, a in zip(ordered, agents, strict=True)})
        before = self.automaton.chosen.name
        scores = self.automaton.learn(steps, ended, session_recalls(ordered, steps, self.composition.role_blocks))
        covered, bound_trials = self._learn_calls(ordered, agents)
        hits, trials = scores.get(before, (0, 0))
        self.modes.record(SessionScore(hits, trials, covered, bound_trials))
        self._learn_steps(steps)
        if ended:
            self.regex.add(steps)
        self.sessions_learned += 1
        self.calls_learned += len(ordered)

    def _learn_calls(self, calls: Sequence[CallObservation], agents: Sequence[str]) -> tuple[int, int]:
        """One pass over the session's calls (start order): score each output against the
        bound it would have had, then learn output lengths and prompt composition.

        Outputs are gathered per agent and added to the windows once per session.
        Returns (calls under their bound, calls that had a bound).
        """
        covered = bound_trials = 0
        bounds, samples_of = self.bound_tokens, self.samples
        outputs: dict[str, list[int]] = {}
        learn_prompts = self._sampled()
        prompts: list[tuple[str, tuple[int, ...]]] = []
        for call, agent in zip(calls, agents, strict=True):
            batch = outputs.get(agent)
            if batch is None:
                outputs[agent] = [call.output_tokens]
            else:
                batch.append(call.output_tokens)
            if learn_prompts and call.block_hashes:
                prompts.append((agent, call.block_hashes))
        if prompts:
            self.composition.observe_session(prompts)
        q, c = self.config.bound_quantile, self.config.bound_confidence
        for agent, batch in outputs.items():
            limit = bounds.get(agent)
            if limit is not None:
                bound_trials += len(batch)
                covered += sum(1 for output in batch if output <= limit)
            samples = samples_of.get(agent)
            if samples is None:
                samples = samples_of[agent] = OutputSamples(self.config.max_samples_per_agent)
            samples.extend(batch)
            bounds[agent] = samples.bound(q, c)
        return covered, bound_trials

    def _sampled(self) -> bool:
        """Whether this session feeds the sampled statistics (prompt composition, delays)."""
        return self.sessions_learned < SAMPLE_ALL_FIRST or self.sessions_learned % SAMPLE_EVERY == 0

    def _learn_steps(self, steps: Sequence[Step]) -> None:
        """Fan-out widths (every session) and transition delays (a sample of sessions)."""
        delays: dict[tuple[str, str], list[int]] = {}
        learn_delays = self._sampled()
        widths: dict[str, list[int]] = {}  # agent -> [width sum, steps] in this session
        previous = None
        for step in steps:
            agent = step.agent
            tally = widths.get(agent)
            if tally is None:
                widths[agent] = [step.width, 1]
            else:
                tally[0] += step.width
                tally[1] += 1
            if previous is not None and learn_delays:
                gap_s = step.start_s - previous.end_s
                key = (previous.agent, agent)
                batch = delays.get(key)
                if batch is None:
                    delays[key] = batch = []
                batch.append(round(gap_s * 1000.0) if gap_s > 0.0 else 0)
            previous = step
        for key, batch in delays.items():
            samples = self.delays_ms.get(key)
            if samples is None:
                if len(self.delays_ms) >= _MAX_TRANSITIONS:
                    continue
                samples = self.delays_ms[key] = OutputSamples(_DELAY_SAMPLES)
            samples.extend(batch)
            self.median_delay_s[key] = samples.quantile_value(0.5) / 1000.0
        width_sum, width_steps = self.width_sum, self.width_steps
        for agent, (width, count) in widths.items():
            width_sum[agent] = total = width_sum.get(agent, 0.0) + width
            width_steps[agent] = n = width_steps.get(agent, 0) + count
            self.mean_width[agent] = total / n

    # -- prediction ------------------------------------------------------------
    def predict(self, live: LiveSession | None, agent: str | None, session: str | None, now_s: float) -> Prediction:
        """Predictions for ``live`` (None: a session not seen yet).

        With ``agent``: a call of that agent is arriving now (bound and prefix are for
        it); without: what follows the last finished step (bound and prefix are for the
        most likely next agent). Remaining steps and work count what follows that step.
        """
        history = live.history if live is not None else []
        current: str | None = None
        visits = 0
        recall: str | None = None  # the finished step's signature (signature.py)
        output_tokens: int | None = None
        if agent is not None:
            current = self._name_for_lookup(agent) if agent else UNKNOWN_AGENT
            visits = (live.visits.get(current, 0) if live is not None else 0) + 1
            context = [START, *history[-(self.config.max_order - 1) :], current] if self.config.max_order > 1 else [START, current]
        else:
            current = history[-1] if history else None
            visits = live.visits.get(current, 0) if live is not None and current else 0
            context = [START, *history[-self.config.max_order :]]
            if live is not None and live.steps:
                live.recall.update(live.calls, live.step_of, live.steps, self.composition.role_blocks)
                recall = live.recall.recalls[-1]
                output_tokens = live.steps[-1].max_output_tokens
        stats = self.automaton.lookup(context, min(visits, self.config.loop_count_cap), None, recall, output_tokens)
        next_agents = stats.ranked if stats is not None else ()
        steps_left = work_left = None
        if stats is not None and stats.ended_weight > 0.0:
            steps_left = stats.steps_sum / stats.ended_weight
            work_left = stats.work_sum / stats.ended_weight
        top = next_agents[0][0] if next_agents else None
        subject = current if agent is not None else top
        if subject == END:
            subject = None
        bound = self.bound_tokens.get(subject) if subject else None
        arrival = None
        if agent is None and live is not None and live.last_end_s is not None and top and top != END and current:
            delay = self.median_delay_s.get((current, top))
            if delay is not None:
                arrival = live.last_end_s + delay
        fanout = mass = 0.0
        for name, p in next_agents:
            if name != END:
                fanout += p * self.mean_width.get(name, 1.0)
                mass += p
        return Prediction(
            workflow=self.name,
            session=session,
            agent=agent,
            mode=self.modes.mode,
            next_agents=next_agents,
            expected_remaining_steps=steps_left,
            expected_remaining_work_tokens=work_left,
            output_bound_tokens=bound,
            next_arrival_s=arrival,
            expected_fanout=fanout / mass if mass > 0.0 else 1.0,
            prefix=self._prefix(live, subject),
            reason=f"{self.automaton.chosen.name} after {current or 'start'}",
        )

    def _prefix(self, live: LiveSession | None, agent: str | None) -> PrefixPrediction:
        if agent is None:
            return PrefixPrediction("none")
        if live is None:
            return self.composition.predict(agent, None, None, 64)
        return self.composition.predict(agent, live.last_prompt_by_agent.get(agent), live.last_prompt, live.block_size)

    # -- reports ---------------------------------------------------------------
    def snapshot(self) -> WorkflowSnapshot:
        c = self.config
        return WorkflowSnapshot(
            workflow=self.name,
            sessions_learned=self.sessions_learned,
            calls_learned=self.calls_learned,
            mode=self.modes.state(),
            context_model=self.automaton.chosen.name,
            model_scores={s.name: round(self.automaton.accuracy(s.name), 4) for s in self.automaton.specs},
            regex=self.regex.render(c.prune_min_probability),
            edges=self.automaton.edges(c.prune_min_probability),
            agents={agent: self.samples[agent].summary(c.bound_quantile, c.bound_confidence) for agent in sorted(self.samples)},
            delays_s={
                f"{a} -> {b}": (s.quantile_value(0.5) / 1000.0, s.quantile_value(0.9) / 1000.0)
                for (a, b), s in sorted(self.delays_ms.items())
            },
            prefixes=self.composition.summary(),
            fanout={a: round(w, 3) for a, w in sorted(self.mean_width.items()) if w > 1.0},
        )
