"""The small frozen values that policies take and return, and the policy protocols."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pythia_sdk.protocol import AgentTags, Hints


@dataclass(frozen=True, slots=True)
class CallInfo:
    """One LLM call as a policy sees it: who made it and how big it is."""

    call_id: str
    tags: AgentTags
    prompt_tokens: int
    block_hashes: tuple[int, ...] = ()  # chained hashes of the prompt's full KV blocks
    max_tokens: int | None = None
    hints: Hints = Hints()
    arrival_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """One replica's state at decision time, as the driver last observed it."""

    replica_id: str
    healthy: bool = True
    running_requests: int = 0
    queued_requests: int = 0
    outstanding_tokens: int = 0  # prompt + max output tokens of requests not finished
    free_kv_tokens: int = 0
    total_kv_tokens: int = 0
    cached_prefix_tokens: int = 0  # this call's prompt tokens the driver believes are cached there


@dataclass(frozen=True, slots=True)
class RouteDecision:
    replica_id: str
    reason: str


@runtime_checkable
class Router(Protocol):
    """Chooses the replica for a call. Pure: no I/O, no clock reads."""

    name: str

    def route(self, call: CallInfo, replicas: Sequence[ReplicaView], now_s: float) -> RouteDecision:
        """Pick one of ``replicas`` (all healthy ones are candidates; never empty)."""
        ...

    def on_finish(self, call: CallInfo, replica_id: str, now_s: float) -> None:
        """Told when a call routed by this router has finished (or failed)."""
        ...


# --------------------------------------------------------------------------- priority
#: SGLang's request priority, as its scheduler reads it (python/sglang/srt/managers/
#: schedule_policy.py, ``_sort_by_priority_and_fcfs`` and ``preempt_to_schedule``): with the
#: default ``--schedule-low-priority-values-first`` off, a LARGER value is MORE urgent;
#: ties go first-come first-served; a waiting request may preempt a running one only when
#: its priority exceeds the running one's by MORE than
#: ``--priority-scheduling-preemption-threshold`` (default 10). A request sent without a
#: priority gets the least urgent value. Policies below return values in this convention.
SGLANG_PRIORITY_PREEMPTION_THRESHOLD = 10


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """What happened to one call, told to policies when it ends (finished or failed)."""

    call: CallInfo
    replica_id: str
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    queue_s: float  # arrival at the engine to first scheduled
    service_s: float  # first scheduled to finished (prefill + decode, preemptions included)
    finished_s: float
    ok: bool = True
    # True when the call's output is a tool call the session will come back from; None when
    # the driver cannot tell (a replayed trace knows it; a live gateway usually does not).
    ends_with_tool_call: bool | None = None


@runtime_checkable
class PriorityPolicy(Protocol):
    """Orders calls inside a replica, expressed as SGLang's request priority.

    ``priority`` may be asked again for a call that is still waiting (a driver that can
    re-prioritise queued requests, like the simulated engine, does so to honour ageing);
    a driver that cannot (a real SGLang, where priority is fixed at submission) asks once.
    """

    name: str

    def priority(self, call: CallInfo, now_s: float) -> int | None:
        """SGLang priority for ``call`` (larger is more urgent); None means "send none"."""
        ...

    def on_finish(self, outcome: CallOutcome, now_s: float) -> None:
        """Told once per call when it ends."""
        ...


# --------------------------------------------------------------------------- cache hints
@dataclass(frozen=True, slots=True)
class CacheOwner:
    """Who a cached prefix belongs to: the engine stores this on radix nodes it inserts."""

    workflow: str | None = None
    session: str | None = None
    agent: str | None = None

    @classmethod
    def of(cls, tags: AgentTags) -> CacheOwner:
        return cls(tags.workflow, tags.session, tags.agent)


@dataclass(frozen=True, slots=True)
class RetentionHint:
    """How much an owner's cached prefix is worth keeping, at one moment.

    ``pinned_until_s``: do not evict before this time (Continuum's TTL); the engine treats
    a pinned node as locked. ``steps_to_execution``: how many workflow steps until the
    owner's agent runs again (KVFlow); 0 = running now, None = unknown, a large value =
    not expected again. Nodes with larger values are evicted first; LRU breaks ties.
    """

    pinned_until_s: float | None = None
    steps_to_execution: int | None = None
    reason: str = ""

    def pinned_at(self, now_s: float) -> bool:
        return self.pinned_until_s is not None and now_s < self.pinned_until_s


@dataclass(frozen=True, slots=True)
class PrefetchAction:
    """Make ``block_hashes`` (a prefix of ``prompt_tokens`` tokens) resident on a replica.

    KVFlow loads such a prefix from host memory in the background; an engine without a
    host tier may realise it as a prefill-only request (``max_new_tokens`` 0). The driver
    schedules it at ``at_s`` and may drop it when the replica has no room.
    """

    replica_id: str
    owner: CacheOwner
    block_hashes: tuple[int, ...]
    prompt_tokens: int
    at_s: float
    reason: str


@runtime_checkable
class CacheHintPolicy(Protocol):
    """Advice to the engine's eviction: what to keep, what to pin, what to bring back.

    The engine consults ``retention`` for the owners of eviction candidates (see
    ``pythia_server.policy.baselines.retention.eviction_sort_key``); the driver tells the
    policy when calls start and end and schedules the prefetches it returns.
    """

    name: str

    def retention(self, owner: CacheOwner, now_s: float) -> RetentionHint | None: ...

    def on_start(self, call: CallInfo, replica_id: str, now_s: float) -> None:
        """Told when a call is routed to ``replica_id``."""
        ...

    def on_finish(self, outcome: CallOutcome, now_s: float) -> tuple[PrefetchAction, ...]:
        """Told once per call when it ends; returns prefetches to schedule (often none)."""
        ...

    def on_session_end(self, session: str, now_s: float) -> None: ...


# --------------------------------------------------------------------------- bundle
@dataclass(frozen=True, slots=True)
class EngineSettings:
    """The SGLang launch flags a policy bundle expects its replicas to run with."""

    schedule_policy: str = "fcfs"  # --schedule-policy
    radix_eviction_policy: str = "lru"  # --radix-eviction-policy (cache hints override it)
    enable_priority_scheduling: bool = False  # --enable-priority-scheduling
    priority_preemption: bool = True  # False = --disable-priority-preemption
    priority_preemption_threshold: int = SGLANG_PRIORITY_PREEMPTION_THRESHOLD
    low_priority_values_first: bool = False  # --schedule-low-priority-values-first
    max_running_requests: int | None = None  # --max-running-requests; None: SGLang's own derivation
    enable_mixed_chunk: bool = False  # --enable-mixed-chunk: running requests decode inside prefill steps


@dataclass(frozen=True, slots=True)
class PolicyBundle:
    """Everything that makes one serving policy, so a comparison is a different constructor.

    ``priority`` None = SGLang's FCFS; ``cache_hints`` None = the engine's own eviction;
    ``scaler`` None = a fixed replica count. Objects inside are stateful: build one bundle
    per run (``make_policy``).
    """

    name: str
    router: Router
    priority: PriorityPolicy | None = None
    cache_hints: CacheHintPolicy | None = None
    scaler: object | None = None
    engine: EngineSettings = EngineSettings()
    description: str = ""


# --------------------------------------------------------------------------- scaling
@dataclass(frozen=True, slots=True)
class ScaleTick:
    """What an autoscaler sees at one tick.

    ``replicas`` are the serving replicas (draining ones excluded); ``starting_replicas``
    are still cold-starting (counted toward the target, not yet serving).
    ``predictions`` are the profiler's answers for live sessions (``Prediction`` from
    ``pythia_server.profiler``, typed loosely so this module stays import-light);
    ``session_replicas`` maps a live session to the replica its last call ran on.
    """

    now_s: float
    replicas: tuple[ReplicaView, ...]
    starting_replicas: int = 0
    predictions: tuple[object, ...] = ()
    session_replicas: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ScaleDecision:
    """How many replicas to have (serving + starting), which to drain, when to ask again."""

    target_replicas: int
    reason: str
    next_tick_s: float
    drain: tuple[str, ...] = ()  # replica ids to stop sending new calls to and release


@runtime_checkable
class Scaler(Protocol):
    """Decides the replica count. Pure: fed ticks, returns decisions; the driver acts."""

    name: str

    def decide(self, tick: ScaleTick) -> ScaleDecision: ...
