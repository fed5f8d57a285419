"""Continuum: pin a session's KV across its tool calls for a TTL, schedule programs FCFS.

Reproduces Li et al., "Continuum: Efficient and Robust Multi-Turn LLM Agent Scheduling
with KV Cache Time-to-Live" (arXiv 2511.02230, v6 §4-5; code Hanchenli/vllm-continuum).
When a call ends in a tool call (and is not the program's last step), the session's KV is
pinned in GPU memory for a time-to-live tau*; when tau* expires the pin lapses and the KV
is evictable again; program-level first-come first-served orders calls by the arrival of
their program (session), so a returning turn is not queued behind later programs.

The TTL is the paper's Eq. 2 over the tool-duration distribution D:

    tau* = argmax over tau in {0} U observed durations of  P(D <= tau) * B - tau
    B    = reload_or_prefill_s(context tokens) + eta * T

where T is the mean queueing delay of follow-up turns whose KV had not been retained
(sliding window of 100), and eta = -Corr(k, N - k) over the turns k = 1..N of completed
programs ("memoryfulness"; 1 until defined). Cold start (at most 100 durations seen in
all): D ~ Exp(1), whose optimum is tau* = ln(B) for B > 1, else 0. Once more than 100
durations are known, the tool's own empirical CDF is used if it has more than 100,
otherwise the global one. Ties keep the smallest tau.

The constants and the online bookkeeping follow the paper-faithful reproduction in
HCAHOI/agent-sched-bench (``scripts/baselines/continuum_reproduction.py``), which notes
that the public vLLM fork ships a simpler rule: pin for a fixed 2 s unless the tool's
mean duration exceeds 2 s (``ContinuumConfig(ttl_rule="fixed")`` reproduces that).

Expressed through SGLang: program FCFS is the priority ``-round(program_start_s * 1000)``
(earlier programs more urgent) with SGLang's priority preemption disabled (Continuum's
vLLM scheduler does not preempt running calls for arrivals); pins are
``RetentionHint.pinned_until_s`` for the session's owner, which the engine treats as
locked (``retention.node_sort_key``).

Deviations: a tool is identified by the agent that called it (traces here do not name
tools); the recompute cost is linear in tokens (``prefill_s_per_token``, 2.5e-5 s from the
Llama-3.1-8B / H100 calibration table) where the paper fits a measured curve; T uses the
queueing of follow-up calls that arrived with no live pin; the turn pairs for eta keep the
latest ``window_pairs``. A driver that cannot tell whether a call ended in a tool call
(``ends_with_tool_call`` None) is treated as if it did.
"""

from __future__ import annotations

import math
import statistics
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass

from pythia_server.policy.types import CacheOwner, CallInfo, CallOutcome, PrefetchAction, RetentionHint

__all__ = [
    "ContinuumCacheHints",
    "ContinuumConfig",
    "ProgramFcfsPriority",
    "choose_ttl",
    "cold_start_ttl",
    "memoryfulness",
]


@dataclass(frozen=True, slots=True)
class ContinuumConfig:
    ttl_rule: str = "paper"  # "paper" (Eq. 2) or "fixed" (the public fork's 2 s rule)
    prefill_s_per_token: float = 2.5e-5
    history_threshold: int = 100  # durations needed before an empirical CDF is trusted
    queue_window: int = 100  # follow-up queueing delays averaged into T
    window_pairs: int = 100_000  # (k, N - k) pairs kept for eta
    durations_window: int = 10_000  # durations kept, globally and per tool
    fixed_ttl_s: float = 2.0

    def __post_init__(self) -> None:
        if self.ttl_rule not in ("paper", "fixed"):
            raise ValueError(f"ttl_rule must be 'paper' or 'fixed', got {self.ttl_rule!r}")
        if self.prefill_s_per_token < 0 or self.fixed_ttl_s < 0:
            raise ValueError("prefill_s_per_token and fixed_ttl_s must be non-negative")
        if min(self.history_threshold, self.queue_window, self.window_pairs, self.durations_window) < 1:
            raise ValueError("thresholds and windows must be >= 1")


def choose_ttl(durations_s: Sequence[float], benefit_s: float) -> float:
    """Eq. 2: the smallest tau in {0} U durations maximising P(D <= tau) * benefit - tau."""
    samples = sorted(d for d in durations_s if d >= 0)
    if not samples:
        return 0.0
    n = len(samples)
    best_tau, best_reward = 0.0, sum(1 for d in samples if d == 0) / n * benefit_s
    covered = 0
    while covered < n:
        tau = samples[covered]
        while covered < n and samples[covered] == tau:
            covered += 1
        reward = covered / n * benefit_s - tau
        if reward > best_reward:
            best_tau, best_reward = tau, reward
    return best_tau


def cold_start_ttl(benefit_s: float) -> float:
    """Eq. 2's optimum when tool durations are Exp(1): ln(B) for B > 1, else 0."""
    return math.log(benefit_s) if benefit_s > 1.0 else 0.0


def memoryfulness(turn_pairs: Sequence[tuple[int, int]]) -> float:
    """eta = -Corr(k, N - k) over program turns; 1 when the correlation is undefined."""
    if len(turn_pairs) < 2:
        return 1.0
    done, left = zip(*turn_pairs, strict=True)
    if len(set(done)) < 2 or len(set(left)) < 2:
        return 1.0
    return max(-1.0, min(1.0, -statistics.correlation(done, left)))


@dataclass(slots=True)
class _Program:
    turns: int = 0
    tool_key: tuple[str | None, str | None] | None = None  # the tool its last turn called
    last_finish_s: float | None = None


class ContinuumCacheHints:
    """TTL pins of a session's KV across the tool calls it makes."""

    name = "continuum"

    def __init__(self, config: ContinuumConfig = ContinuumConfig(), max_sessions: int = 100_000) -> None:
        self.config = config
        self.max_sessions = max_sessions
        self._pins: dict[str, tuple[float, str]] = {}  # session -> (until_s, reason)
        self._programs: OrderedDict[str, _Program] = OrderedDict()
        self._global: deque[float] = deque(maxlen=config.durations_window)
        self._by_tool: dict[tuple[str | None, str | None], deque[float]] = {}
        self._queue_delays: deque[float] = deque(maxlen=config.queue_window)
        self._followup_unpinned: set[str] = set()  # call ids that arrived with no live pin
        self._turn_pairs: deque[tuple[int, int]] = deque(maxlen=config.window_pairs)
        self._eta = 1.0

    # ----------------------------------------------------------------- estimates
    @property
    def eta(self) -> float:
        return self._eta

    @property
    def mean_evicted_queue_s(self) -> float:
        return statistics.fmean(self._queue_delays) if self._queue_delays else 0.0

    def durations(self, workflow: str | None = None, agent: str | None = None) -> list[float]:
        """Observed tool durations: one tool's, or all of them when no tool is named."""
        if workflow is None and agent is None:
            return list(self._global)
        return list(self._by_tool.get((workflow, agent), ()))

    def ttl_for(self, outcome: CallOutcome) -> float:
        """The pin length for a call that just ended in a tool call."""
        cfg = self.config
        tags = outcome.call.tags
        tool = (tags.workflow, tags.agent)
        if cfg.ttl_rule == "fixed":
            seen = self._by_tool.get(tool)
            mean = statistics.fmean(seen) if seen else 0.0
            return 0.0 if mean > cfg.fixed_ttl_s else cfg.fixed_ttl_s
        context = outcome.prompt_tokens + outcome.output_tokens
        benefit = context * cfg.prefill_s_per_token + self._eta * self.mean_evicted_queue_s
        if len(self._global) <= cfg.history_threshold:
            return cold_start_ttl(benefit)
        own = self._by_tool.get(tool)
        history = own if own is not None and len(own) > cfg.history_threshold else self._global
        return choose_ttl(list(history), benefit)

    # ----------------------------------------------------------------- CacheHintPolicy
    def retention(self, owner: CacheOwner, now_s: float) -> RetentionHint | None:
        pin = self._pins.get(owner.session or "")
        if pin is None:
            return None
        until, reason = pin
        return RetentionHint(until, None, reason) if now_s < until else None

    def on_start(self, call: CallInfo, replica_id: str, now_s: float) -> None:
        session = call.tags.session
        if not session:
            return
        program = self._program(session)
        pin = self._pins.pop(session, None)  # the running call locks the prefix from here
        if program.turns > 0 and (pin is None or call.arrival_s >= pin[0]):
            self._followup_unpinned.add(call.call_id)
        if program.tool_key is not None and program.last_finish_s is not None:
            duration = max(0.0, call.arrival_s - program.last_finish_s)
            self._global.append(duration)
            self._by_tool.setdefault(program.tool_key, deque(maxlen=self.config.durations_window)).append(duration)
        program.tool_key = None

    def on_finish(self, outcome: CallOutcome, now_s: float) -> tuple[PrefetchAction, ...]:
        call = outcome.call
        if call.call_id in self._followup_unpinned:
            self._followup_unpinned.discard(call.call_id)
            self._queue_delays.append(outcome.queue_s)
        session = call.tags.session
        if not session:
            return ()
        program = self._program(session)
        program.turns += 1
        program.last_finish_s = now_s
        if not outcome.ok or outcome.ends_with_tool_call is False:
            program.tool_key = None
            return ()
        program.tool_key = (call.tags.workflow, call.tags.agent)
        ttl = self.ttl_for(outcome)
        if ttl > 0:
            self._pins[session] = (now_s + ttl, f"pinned {ttl:.2f}s across tool call")
        return ()

    def on_session_end(self, session: str, now_s: float) -> None:
        self._pins.pop(session, None)
        program = self._programs.pop(session, None)
        if program is not None and program.turns > 0:
            total = program.turns
            self._turn_pairs.extend((k, total - k) for k in range(1, total + 1))
            self._eta = memoryfulness(self._turn_pairs)

    def _program(self, session: str) -> _Program:
        program = self._programs.get(session)
        if program is None:
            program = self._programs[session] = _Program()
            while len(self._programs) > self.max_sessions:
                self._programs.popitem(last=False)
        return program


class ProgramFcfsPriority:
    """Continuum's program-level FCFS: a call inherits its session's first arrival."""

    name = "program_fcfs"

    def __init__(self, max_sessions: int = 100_000) -> None:
        self.max_sessions = max_sessions
        self._start_s: OrderedDict[str, float] = OrderedDict()

    def program_start_s(self, call: CallInfo) -> float:
        session = call.tags.session
        if not session:
            return call.arrival_s
        start = self._start_s.get(session)
        if start is None:
            start = call.arrival_s
            self._start_s[session] = start
            while len(self._start_s) > self.max_sessions:
                self._start_s.popitem(last=False)
        self._start_s.move_to_end(session)
        return start

    def priority(self, call: CallInfo, now_s: float) -> int | None:
        return -round(self.program_start_s(call) * 1000)

    def on_finish(self, outcome: CallOutcome, now_s: float) -> None:
        return None
