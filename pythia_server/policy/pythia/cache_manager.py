"""Speculative cache manager: keep what will be reused soon, warm what is about to be needed.

Retention (a ``RetentionHint`` per owner; the engine evicts larger ``steps_to_execution``
first, LRU among equals; see ``policy.baselines.retention``):

- a call of the owner's agent is running: 0 (kept);
- a live session of a proactive type: a rank from 1 to ``retention_levels``, growing with
  the predicted seconds until the prefix is used again, divided by the probability that
  it is used at all and by what recomputing it would cost (prefill time, with a
  quadratic attention term: long histories are dearer per token);
- a live session without a usable prediction (shadow type): ``LIVE_RANK``, LRU among them;
- a finished session: ``ENDED_RANK``, beyond ``NOT_EXPECTED``: its transient tokens go
  before anything else, plain traffic included. Role prompts shared with live sessions
  stay, because a shared node is valued by its most urgent owner (``combine_hints``).

Warming: when a session's step ends (no call of it still in flight) and the profiler,
proactive for its type, names the next agent with probability at least
``min_warm_confidence``, a ``PrefetchAction`` of the predicted prefix goes to the replica
that will serve it (the session's replica, whose cache the router follows; another one if
that has no headroom), at the predicted arrival less the prefix's prefill time. The
driver realises it as a prefill-only request (``max_new_tokens`` 0) and drops it when the
replica has no room; ``on_prefetch_result`` lets it say so. Counters: planned, sent,
dropped, hits (the warmed agent's next call ran there and found at least half the tokens
the warm was expected to provide cached) and wasted (the session went elsewhere, ended, or found it cold).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pythia_server.policy.baselines.retention import NOT_EXPECTED
from pythia_server.policy.pythia.context import PythiaContext, SessionState
from pythia_server.policy.types import (
    CacheOwner,
    CallInfo,
    CallOutcome,
    PrefetchAction,
    RetentionHint,
)
from pythia_server.profiler.types import END

__all__ = ["ENDED_RANK", "LIVE_RANK", "SpeculativeCacheManager", "WarmCounters"]

#: A finished session's tokens: evicted before everything else.
ENDED_RANK = NOT_EXPECTED + 1
#: A live session with no usable prediction (shadow mode): after predicted ones, LRU.
LIVE_RANK = 1 << 16
_UNKNOWN_ARRIVAL_S = 1.0  # assumed wait when the profiler has no delay for the transition
_ATTENTION_TOKENS = 32_768  # context length at which attention doubles the per-token cost


@dataclass(slots=True)
class WarmCounters:
    planned: int = 0
    sent: int = 0  # as reported by the driver (on_prefetch_result)
    dropped: int = 0  # the driver had no room, or it was already resident
    hits: int = 0
    wasted: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"planned": self.planned, "sent": self.sent, "dropped": self.dropped,
                "hits": self.hits, "wasted": self.wasted}


@dataclass(frozen=True, slots=True)
class _Warm:
    action: PrefetchAction
    agent: str
    hit_tokens: int  # cached tokens the next call needs for the warm to count as a hit


class SpeculativeCacheManager:
    """A ``CacheHintPolicy`` driven by the profiler's predictions (see module docstring)."""

    name = "pythia-cache"

    def __init__(self, context: PythiaContext) -> None:
        self.context = context
        self.config = context.config
        self.counters = WarmCounters()
        self._pending: dict[tuple[str, str], _Warm] = {}  # (session, agent) -> warm not yet used
        self._using: dict[str, _Warm] = {}  # call id -> the warm its call was routed onto

    # ------------------------------------------------------------------ retention
    def retention(self, owner: CacheOwner, now_s: float) -> RetentionHint | None:
        if not self.config.retention or owner.session is None:
            return None
        ctx = self.context
        if owner.session in ctx.ended:
            return RetentionHint(None, ENDED_RANK, "session ended")
        state = ctx.sessions.get(owner.session)
        if state is None:
            return None
        if state.running(owner.agent or ""):
            return RetentionHint(None, 0, f"{owner.agent} running")
        if state.next is None:
            return RetentionHint(None, LIVE_RANK, "live session, no prediction")
        return self._predicted(state, owner.agent or "", now_s)

    def _predicted(self, state: SessionState, agent: str, now_s: float) -> RetentionHint:
        p = state.next
        assert p is not None
        p_end = sum(prob for name, prob in p.next_agents if name == END)
        p_agent = sum(prob for name, prob in p.next_agents if name == agent)
        wait_s = _UNKNOWN_ARRIVAL_S if p.next_arrival_s is None else max(p.next_arrival_s - now_s, 0.0)
        # The next call of any agent usually extends the previous call's prompt (shared
        # context): the last agent's prefix is reused whenever the session continues, the
        # next agent's own history with its probability, anyone else's at a later step.
        last = agent == state.last_agent
        reuse = max(p_agent, (1.0 - p_end) if last else 0.5 * (1.0 - p_end))
        if p_agent < 0.5 and not last:
            wait_s = 2.0 * wait_s + _UNKNOWN_ARRIVAL_S
        tokens = state.agent_prompt_tokens.get(agent, 0)
        cost_s = max(tokens * self.config.prefill_s_per_token * (1.0 + tokens / _ATTENTION_TOKENS), 1e-3)
        score = (wait_s + 0.01) / max(reuse, 0.01) / cost_s
        rank = 1 + min(self.config.retention_levels - 1, int(2.0 * math.log2(1.0 + score)))
        return RetentionHint(None, rank, f"{agent}: reuse {reuse:.2f} in {wait_s:.1f}s, recompute {cost_s:.3f}s")

    # ------------------------------------------------------------------ events
    def on_start(self, call: CallInfo, replica_id: str, now_s: float) -> None:
        self.context.started(call, replica_id, now_s)
        tags = call.tags
        warm = self._pending.pop((tags.session or "", tags.agent or ""), None)
        if warm is None:
            return
        if warm.action.replica_id == replica_id:
            self._using[call.call_id] = warm
        else:
            self.counters.wasted += 1
        self.context.warm_targets.pop((tags.session or "", tags.agent or ""), None)

    def on_finish(self, outcome: CallOutcome, now_s: float) -> tuple[PrefetchAction, ...]:
        warm = self._using.pop(outcome.call.call_id, None)
        if warm is not None:
            if outcome.cached_tokens >= warm.hit_tokens:
                self.counters.hits += 1
            else:
                self.counters.wasted += 1
        state = self.context.finished(outcome, now_s)
        if not self.config.warm or state is None:
            return ()
        action = self._plan(outcome, state, now_s)
        return () if action is None else (action,)

    def on_session_end(self, session: str, now_s: float) -> None:
        for key in [k for k in self._pending if k[0] == session]:
            del self._pending[key]
            self.context.warm_targets.pop(key, None)
            self.counters.wasted += 1
        self.context.end_session(session, now_s)

    def on_prefetch_result(self, action: PrefetchAction, sent: bool) -> None:
        """The driver's word on a warm: sent, or dropped (no room, already resident)."""
        if sent:
            self.counters.sent += 1
            return
        self.counters.dropped += 1
        # Not sent: either already resident (the router's own index knows where it sent the
        # prefix) or no room: either way the router must not count on the warm any more.
        key = (action.owner.session or "", action.owner.agent or "")
        target = self.context.warm_targets.get(key)
        if target is not None and target[0] == action.replica_id:
            del self.context.warm_targets[key]

    # ------------------------------------------------------------------ planning
    def _plan(self, outcome: CallOutcome, state: SessionState, now_s: float) -> PrefetchAction | None:
        p = state.next
        if p is None or state.in_flight or not p.next_agents:
            return None  # shadow / unknown type, or the step has calls still running
        agent, probability = p.next_agents[0]
        cfg = self.config
        prefix = p.prefix
        if agent == END or probability < cfg.min_warm_confidence:
            return None
        if not prefix.block_hashes or prefix.tokens < cfg.min_warm_tokens:
            return None
        session = outcome.call.tags.session or ""
        replica_id = self._target(state, agent, prefix.kind, prefix.tokens)
        if replica_id is None:
            return None
        prefill_s = prefix.tokens * cfg.prefill_s_per_token
        arrival_s = p.next_arrival_s if p.next_arrival_s is not None else now_s
        at_s = max(now_s, arrival_s - prefill_s - cfg.warm_lead_s)
        owner = CacheOwner(state.workflow, session, agent)
        reason = f"{agent} next (p {probability:.2f}), {prefix.kind} prefix {prefix.tokens} tokens"
        action = PrefetchAction(replica_id, owner, prefix.block_hashes, prefix.tokens, at_s, reason)
        # A hit: the call found at least half of what the warm was expected to provide.
        hit_tokens = max(int(0.5 * prefix.tokens * max(prefix.expected_hit_fraction, 0.1)), cfg.block_size)
        self._pending[(session, agent)] = _Warm(action, agent, hit_tokens)
        self.context.warm_targets[(session, agent)] = (replica_id, prefix.tokens)
        self.counters.planned += 1
        return action

    def _target(self, state: SessionState, agent: str, kind: str, tokens: int) -> str | None:
        """Where the prefix already lives if it has headroom, else the roomiest replica."""
        views = self.context.views
        preferred = state.agent_replica.get(agent) if kind == "history" else None
        preferred = preferred or state.last_replica
        if preferred is not None and self._has_room(preferred, tokens):
            return preferred
        roomy = [v for v in views.values() if v.healthy and self._has_room(v.replica_id, tokens)]
        if not roomy:
            return None
        return max(roomy, key=lambda v: (v.free_kv_tokens / max(v.total_kv_tokens, 1), v.replica_id)).replica_id

    def _has_room(self, replica_id: str, tokens: int) -> bool:
        view = self.context.views.get(replica_id)
        if view is None or view.total_kv_tokens <= 0:
            return view is None  # never seen: let the driver judge
        free = view.free_kv_tokens
        return free >= tokens and free >= self.config.warm_headroom_fraction * view.total_kv_tokens
