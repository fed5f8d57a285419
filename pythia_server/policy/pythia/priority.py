"""Lookahead priority: finish whole workflows one after another, not all of them together.

SGLang's convention (``policy.types``): a larger value is more urgent. Two orders
(``PythiaConfig.priority_order``):

**session** (default). Every call of a session carries one key, the session's start
plus its predicted remaining work::

    key_s    = session start + srpt_s_per_token x (predicted output of this call +
                                                   the session's remaining critical-path work)
    priority = SESSION_TOP - round(key_s / priority_resolution_s)

so the oldest session goes first, and all of a session's calls, fan-out siblings included,
sit at one level and run together. ``srpt_s_per_token`` (default 0: pure session FCFS) lets
a session with less predicted work left pass one started a little earlier: SRPT with linear
ageing (``pythia-srpt``: 0.01 s a token). It measured neutral on deep research (test split,
heavy: +1% mean; even the true remaining work gains 1.4%: its sessions are alike) and 10%
worse on ChatDev, whose remaining work is hard to predict. Under load a processor-shared
batch finishes N similar workflows all near the end; in session order they finish one after
another, which halves the mean JCT at the same throughput. It needs a queue to order: the bundle caps running requests
(``capacity.py``). No ageing is needed: a session never overtakes an older one, so each
waits only for the sessions that started before it. Calls of shadow or unknown types
and plain traffic are keyed by their own arrival: FCFS, SGLang's default (shadow mode's
reactive default).

**critical-path** (the first design, ``pythia-critical-path``): per call, 16 log-spaced
levels of remaining work on the session's critical path, 4 points apart, one level per
doubling of the width the call unblocks, and ageing (one point per second waited, one per
ten seconds the session has run, capped at 40). Under heavy load waits of many seconds
make ageing dominate the coarse levels, so it orders almost FCFS per call and measured
neutral; it is kept for the ablation. Neutral value (shadow, unknown work): level 8.

Bundles run with priority preemption off (``--disable-priority-preemption``): the values
order the waiting queue only; preempting running calls (they are recomputed) measured worse.
"""

from __future__ import annotations

import math

from pythia_server.policy.pythia.context import PythiaContext
from pythia_server.policy.types import CallInfo, CallOutcome

__all__ = ["BASE_PRIORITY", "SESSION_TOP", "LookaheadPriority"]

#: Keeps every value positive; a call sent without priority (SGLang: least urgent) sorts below.
BASE_PRIORITY = 100
#: Session order: the priority of key 0. Above any key in 0.01 s of a Unix-epoch clock, and
#: below 2^53, so values stay exact through JSON.
SESSION_TOP = 2**52
_SESSION_AGEING_FACTOR = 10.0


class LookaheadPriority:
    """A ``PriorityPolicy`` from the profiler's remaining-work and fan-out predictions."""

    name = "pythia-priority"

    def __init__(self, context: PythiaContext) -> None:
        self.context = context
        self.config = context.config

    @property
    def fixed_at_submission(self) -> bool:
        """Session order gives a waiting call the same value whenever asked: a driver need
        not re-ask (the replay skips its re-prioritisation ticks, which cost a prediction
        per waiting call per tick)."""
        return self.config.priority_order == "session"

    @property
    def neutral(self) -> int:
        return BASE_PRIORITY + self.config.priority_step * (self.config.priority_levels // 2)

    def priority(self, call: CallInfo, now_s: float) -> int | None:
        if self.config.priority_order == "session":
            return self._session_order(call, now_s)
        return self._critical_path(call, now_s)

    def session_key_s(self, call: CallInfo, now_s: float) -> float:
        """The call's place in line, in seconds: earlier is more urgent."""
        arrival_s = call.arrival_s if call.arrival_s > 0.0 else now_s
        prediction = self.context.predict_call(call, now_s)
        if prediction is None:
            return arrival_s  # shadow, unknown type, plain traffic: FCFS
        state = self.context.sessions.get(call.tags.session or "")
        key_s = min(state.started_s, arrival_s) if state is not None else arrival_s
        if prediction.expected_remaining_work_tokens is not None:
            remaining = self.context.output_tokens(call, prediction) + max(prediction.expected_remaining_work_tokens, 0.0)
            key_s += self.config.srpt_s_per_token * remaining
        return key_s

    def _session_order(self, call: CallInfo, now_s: float) -> int:
        return SESSION_TOP - round(self.session_key_s(call, now_s) / self.config.priority_resolution_s)

    def _critical_path(self, call: CallInfo, now_s: float) -> int:
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
