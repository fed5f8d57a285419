"""Lookahead priority: finish the workflows closest to done, unblock fan-outs, age the rest.

SGLang's convention (``policy.types``): a larger value is more urgent, and a waiting call
preempts a running one only when its value exceeds it by more than 10. For a call of a
proactive type::

    remaining = its predicted output (the agent's bound) + the session's predicted
                remaining work on the critical path after this step (output tokens)
    level     = (levels - 1) - floor(log2(1 + remaining / work_unit_tokens))   # SRPT-like
              + fanout_bonus_levels * log2(expected width of the next step)   # unblocks more
    priority  = BASE + priority_step * level + age points

Levels are ``priority_step`` (4) apart. Bundles run with priority preemption off
(``PythiaConfig.priority_preemption``, ``--disable-priority-preemption``): the values
order the waiting queue only, because preempting (and recomputing) running calls measured
worse on the dev workloads; with it on (``pythia-preempt``) only a call with about 8x less
remaining work (three levels, more than 10 points) preempts. (Continuous levels, a finer
order, measured worse on the deep-research dev workload too.) Age points:
one per ``ageing_s_per_point`` seconds the call has waited (drivers that re-ask waiting
calls, like the simulator, honour it) plus one per ten such periods its session has run
(honoured even when asked once), capped at ``max_age_points``, so nothing starves.

Calls of shadow or unknown types, plain traffic, and calls whose remaining work the
profiler cannot estimate yet get the neutral middle level plus the same ageing: FCFS
among themselves (shadow mode's reactive default).
"""

from __future__ import annotations

import math

from pythia_server.policy.pythia.context import PythiaContext
from pythia_server.policy.types import CallInfo, CallOutcome

__all__ = ["BASE_PRIORITY", "LookaheadPriority"]

#: Keeps every value positive; a call sent without priority (SGLang: least urgent) sorts below.
BASE_PRIORITY = 100
_SESSION_AGEING_FACTOR = 10.0


class LookaheadPriority:
    """A ``PriorityPolicy`` from the profiler's remaining-work and fan-out predictions."""

    name = "pythia-priority"

    def __init__(self, context: PythiaContext) -> None:
        self.context = context
        self.config = context.config

    @property
    def neutral(self) -> int:
        return BASE_PRIORITY + self.config.priority_step * (self.config.priority_levels // 2)

    def priority(self, call: CallInfo, now_s: float) -> int | None:
        cfg = self.config
        age = self._age_points(call, now_s)
        prediction = self.context.predict_call(call, now_s)
        if prediction is None or prediction.expected_remaining_work_tokens is None:
            return self.neutral + age
        output = self.context.output_tokens(call, prediction)
        remaining = output + max(prediction.expected_remaining_work_tokens, 0.0)
        doublings = int(math.log2(1.0 + remaining / cfg.work_unit_tokens))
        level: float = (cfg.priority_levels - 1) - min(doublings, cfg.priority_levels - 1)
        level += cfg.fanout_bonus_levels * math.log2(max(prediction.expected_fanout, 1.0))
        return BASE_PRIORITY + round(cfg.priority_step * level) + age

    def on_finish(self, outcome: CallOutcome, now_s: float) -> None:
        self.context.finished(outcome, now_s)

    def _age_points(self, call: CallInfo, now_s: float) -> int:
        cfg = self.config
        waited_s = max(now_s - call.arrival_s, 0.0) if call.arrival_s > 0.0 else 0.0
        state = self.context.sessions.get(call.tags.session or "")
        session_s = max(now_s - state.started_s, 0.0) if state is not None else 0.0
        points = waited_s / cfg.ageing_s_per_point + session_s / (cfg.ageing_s_per_point * _SESSION_AGEING_FACTOR)
        return min(int(points), cfg.max_age_points)
