"""The offline replay driver: a workload through a policy bundle onto N simulated replicas.

It wires three pure parts together on one virtual clock: the workload's readiness rule
(:class:`~pythia_server.replay.dependencies.DependencyTracker`, Dynamo's rule), the
policy bundle (router, priority, cache hints; ``make_policy``) and H1's simulated SGLang
replicas (:class:`~pythia_server.engine.virtual.VirtualCluster`). It drives the policies
the way the live gateway does (``gateway/proxy.py`` and ``gateway/pool.py``):

- a call arrives when it is ready (no gateway latency); its ``CallInfo`` carries the
  prompt's chained block hashes at the gateway's block size (``tokens.block_hashes`` of
  the token ids the engine gets: equal numbers, computed per hash id, not per token),
  ``max_tokens`` = the recorded output length, and the workload's tags;
- the router sees one ``ReplicaView`` per replica built like ``Replica.view()``: calls
  routed and not finished, and their prompt plus ``max_tokens`` (the driver's own
  accounting, ``pool.begin`` / ``pool.end``), the engine's waiting requests and used KV
  (what the gateway reads from ``/v1/loads``; here exact, there up to one probe old),
  and ``cached_prefix_tokens``: what a KV-event index (``sglang_backend/kv_index.py``)
  would say is cached there, read from the radix tree without touching it;
- the priority policy is asked at submission and, unlike a gateway in front of SGLang
  (which fixes priority there), again for each waiting call every
  ``ReplayConfig.reprioritize_every_s`` virtual seconds, so ageing and anti-starvation
  promote queued calls (``VirtualCluster.set_priority``), unless the policy says its values
  are ``fixed_at_submission``; cache
  hints are told ``on_start`` / ``on_finish`` / ``on_session_end`` and steer eviction
  through ``policy.baselines.node_sort_key``; a ``PrefetchAction`` becomes a prefill-only
  request (``max_new_tokens`` 0) at its ``at_s``, dropped when the replica lacks room;
- a bundle's ``scaler`` is ticked as ``replay/scaling.py`` describes: cold start, drain,
  replica-seconds from launch to removal.

Prompts are Dynamo's synthesis (``workload.prompt_token_ids``); outputs are generated
with ``ignore_eos`` so each call produces exactly its recorded ``output_length``. The
result holds one record per call and per session; :mod:`replay.metrics` reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from pythia_sdk.protocol import AgentTags
from pythia_server.engine.step_time import StepTimeModel
from pythia_server.engine.types import (
    EngineConfig,
    EngineError,
    FinishedRequest,
    GenerateRequest,
)
from pythia_server.engine.virtual import VirtualCluster
from pythia_server.policy.baselines.retention import node_sort_key
from pythia_server.policy.types import (
    CacheOwner,
    CallInfo,
    CallOutcome,
    PolicyBundle,
    ReplicaView,
)
from pythia_server.replay.arrivals import ClosedLoop
from pythia_server.replay.dependencies import DependencyTracker, ReadyCall
from pythia_server.replay.prompts import (
    BlockHasher,
    Prefetcher,
    peek_prefix_tokens,
    prompt_ids,
)
from pythia_server.replay.replica_views import ReplicaViews
from pythia_server.replay.reprioritize import Reprioritizer
from pythia_server.replay.results import (
    ReplayConfig,
    ReplayResult,
    RequestResult,
    SessionResult,
)
from pythia_server.replay.scaling import PeriodicTicks, ReplicaFleet, ScaleDriver
from pythia_server.replay.workload import WorkloadRequest, session_key

__all__ = [
    "ReplayConfig",
    "ReplayResult",
    "ReplayRunner",
    "RequestResult",
    "SessionResult",
    "engine_config_for",
    "peek_prefix_tokens",
]

def engine_config_for(bundle: PolicyBundle, base: EngineConfig) -> EngineConfig:
    """The replica flags the bundle asks for (``EngineSettings``) over the base config."""
    s = bundle.engine
    return replace(
        base,
        schedule_policy=s.schedule_policy,
        radix_eviction_policy=s.radix_eviction_policy,
        enable_priority_scheduling=s.enable_priority_scheduling,
        enable_priority_preemption=s.priority_preemption,
        priority_scheduling_preemption_threshold=s.priority_preemption_threshold,
        schedule_low_priority_values_first=s.low_priority_values_first,
        max_running_requests=s.max_running_requests if s.max_running_requests is not None
        else base.max_running_requests,
        enable_mixed_chunk=s.enable_mixed_chunk or base.enable_mixed_chunk,
    )



@dataclass(slots=True)
class _Live:
    """A call in flight: what the driver must remember until it finishes."""

    request: WorkloadRequest
    info: CallInfo
    replica_id: str
    reason: str
    priority: int | None  # at submission
    reserved_tokens: int
    current_priority: int | None = None  # after re-prioritisation


@dataclass(slots=True)
class _Retired:
    """Counters of replicas the scaler removed (their engines are gone)."""

    busy_s: dict[str, float]
    retractions: int = 0
    preemptions: int = 0


class ReplayRunner:
    """One replay of ``requests`` under ``bundle``; build a fresh one (and bundle) per run."""

    def __init__(
        self,
        requests: Sequence[WorkloadRequest],
        bundle: PolicyBundle,
        config: ReplayConfig | None = None,
        step_time: StepTimeModel | None = None,
    ) -> None:
        self.requests = list(requests)
        self.bundle = bundle
        self.config = config or ReplayConfig()
        self.step_time = step_time or StepTimeModel.load()
        self.fleet = ReplicaFleet(self.config.cold_start_s)
        self.replica_ids = [self.fleet.add_serving(0.0) for _ in range(self.config.replicas)]  # the initial pool
        hints = bundle.cache_hints
        eviction_key = None
        if hints is not None:
            def key_for(_replica: str):  # type: ignore[no-untyped-def]
                def key(owners: tuple, last_access: int, now_s: float) -> tuple | None:
                    sort_key = node_sort_key(hints, owners, last_access, now_s)  # type: ignore[arg-type]
                    return None if sort_key[0] == 1 else sort_key  # pinned: not evictable now

                return key

            eviction_key = key_for
        self.cluster = VirtualCluster(
            self.replica_ids,
            engine_config_for(bundle, self.config.engine),
            self.step_time,
            self.config.max_decode_steps,
            eviction_key=eviction_key,
            on_step=self._on_step,
        )
        self._tracker = DependencyTracker(self.requests)
        self._hasher = BlockHasher(self.config.block_size)
        self.replica_views = ReplicaViews(self.cluster, self.fleet, self.replica_ids, bundle.router.name)
        self._live: dict[str, _Live] = {}
        self._results: list[RequestResult] = []
        self._session_start: dict[str, float] = {}
        self._session_end: dict[str, float] = {}
        self._session_calls: dict[str, int] = {}
        self._session_workflow: dict[str, str | None] = {}
        self._tool_after = {d for r in self.requests if (r.tool_wait_ms or 0) > 0 for d in r.wait_for}
        self._loop: ClosedLoop | None = None
        self.prefetcher = Prefetcher(self.cluster, self._hasher, self.fleet.is_serving, self.forget_view,
                                     getattr(hints, "on_prefetch_result", None))
        self.rejected: list[str] = []  # calls the engine refused (too long for the model or the KV pool)
        self._ran = False
        self._session_replica: dict[str, tuple[str, str]] = {}  # live session key -> (session id, last replica)
        self._retired = _Retired({})
        self._ticks = PeriodicTicks(self.cluster)
        self.scaling = (ScaleDriver(bundle.scaler, self.fleet, self.cluster, self, self._ticks)  # type: ignore[arg-type]
                        if bundle.scaler is not None else None)
        every_s = self.config.reprioritize_every_s
        self.reprioritizer = (Reprioritizer(bundle.priority, every_s, self.cluster, self._ticks, self._live,
                                            lambda: (*self.fleet.serving, *self.fleet.draining))
                              if every_s is not None and bundle.priority is not None
                              and bundle.engine.enable_priority_scheduling
                              and not getattr(bundle.priority, "fixed_at_submission", False) else None)

    # ------------------------------------------------------------------ run
    def run(self) -> ReplayResult:
        if self._ran:
            raise RuntimeError("a ReplayRunner runs once; build another (with a fresh bundle)")
        self._ran = True
        if self.config.concurrency is None:
            for ready in self._tracker.initial():
                self._schedule(ready)
        else:
            self._loop = ClosedLoop(self._tracker.session_order(), self.config.concurrency)
            for key in self._loop.start():
                self._start_session(key, 0.0)
        if self.scaling is not None:
            self.scaling.start()
        if self.reprioritizer is not None:
            self.reprioritizer.start()
        end_s = self.cluster.run()
        if not self._tracker.done:
            missing = len(self.requests) - len(self._results)
            raise RuntimeError(f"replay stalled with {missing} calls unfinished (an engine could not admit them)")
        loads = [self.cluster.load(r) for r in self.cluster.replica_ids]
        retired = self._retired
        sessions = tuple(
            SessionResult(key, self._session_workflow.get(key), start, self._session_end[key], self._session_calls[key])
            for key, start in self._session_start.items()
        )
        return ReplayResult(
            policy=self.bundle.name,
            replicas=len(self.replica_ids),
            requests=tuple(self._results),
            sessions=sessions,
            end_s=end_s,
            busy_s={**retired.busy_s, **{r: self.cluster.busy_seconds(r) for r in self.cluster.replica_ids}},
            retractions=sum(load.retractions_total for load in loads) + retired.retractions,
            preemptions=sum(load.preemptions_total for load in loads) + retired.preemptions,
            prefetches_sent=self.prefetcher.sent,
            prefetches_dropped=self.prefetcher.dropped,
            prefetches_resident=self.prefetcher.resident,
            rejected=tuple(self.rejected),
            events=self.cluster.events_processed,
            replica_spans=self.fleet.spans(),
            peak_replicas=self.scaling.peak_replicas if self.scaling else len(self.replica_ids),
            scale_log=tuple(self.scaling.log) if self.scaling else (),
            reprioritized=self.reprioritizer.changed if self.reprioritizer else 0,
        )

    def _start_session(self, key: str, start_s: float) -> None:
        for ready in self._tracker.start_session(key, start_s * 1000.0):
            self._schedule(ready)

    def _schedule(self, ready: ReadyCall) -> None:
        request = ready.request
        self.cluster.call_at(ready.ready_ms / 1000.0, lambda: self._arrive(request))

    # ------------------------------------------------------------------ one call
    def _on_step(self, replica_id: str, _result: object) -> None:
        self.replica_views.forget(replica_id)

    def _arrive(self, request: WorkloadRequest) -> None:
        now_s = self.cluster.now_s
        key = session_key(request)
        if key not in self._session_start:
            self._session_start[key] = now_s
            self._session_calls[key] = 0
            self._session_workflow[key] = request.workflow_type
        self._session_calls[key] += 1
        bundle = self.bundle
        hints = bundle.cache_hints
        tags = AgentTags(request.workflow_type, request.session_id, request.agent, request.parent_agent)
        info = CallInfo(
            call_id=request.request_id,
            tags=tags,
            prompt_tokens=request.input_length,
            block_hashes=self._hasher.hashes(request, keep_tokens=hints is not None),
            max_tokens=request.output_length,
            arrival_s=now_s,
        )
        ids = prompt_ids(request)
        decision = bundle.router.route(info, self.replica_views.views(ids), now_s)
        replica_id = decision.replica_id
        priority = bundle.priority.priority(info, now_s) if bundle.priority is not None else None
        if hints is not None:
            hints.on_start(info, replica_id, now_s)
        reserved = request.input_length + request.output_length
        self.replica_views.begin(replica_id, reserved)
        self._live[request.request_id] = _Live(request, info, replica_id, decision.reason, priority, reserved,
                                               priority)
        self._session_replica[key] = (request.session_id or key, replica_id)
        generate = GenerateRequest(
            rid=request.request_id,
            input_ids=ids,
            max_new_tokens=request.output_length,
            ignore_eos=True,
            priority=priority,
            owner=CacheOwner.of(tags) if hints is not None else None,
        )
        self.replica_views.forget(replica_id)
        try:
            self.cluster.submit(replica_id, generate, self._finished)
        except EngineError as exc:  # SGLang answers 400; the client goes on without an output
            self.rejected.append(f"{request.request_id}: {exc}")
            self._finished(FinishedRequest(request.request_id, request.input_length, 0, 0,
                                           {"type": "rejected", "message": str(exc)}, [], "", now_s, None, now_s))

    def _finished(self, done: FinishedRequest) -> None:
        now_s = self.cluster.now_s
        live = self._live.pop(done.rid)
        request, info, replica_id = live.request, live.info, live.replica_id
        self.replica_views.end(replica_id, live.reserved_tokens)
        if self.scaling is not None:
            self.scaling.call_finished(replica_id)
        bundle = self.bundle
        bundle.router.on_finish(info, replica_id, now_s)
        if bundle.priority is not None or bundle.cache_hints is not None:
            self._tell_outcome(live, done, now_s)
        key = session_key(request)
        self._results.append(RequestResult(
            request_id=request.request_id, session=key, workflow=request.workflow_type, agent=request.agent,
            replica_id=replica_id, route_reason=live.reason, priority=live.priority, ready_s=done.arrival_s,
            first_token_s=done.first_token_s, finish_s=done.finish_s, prompt_tokens=done.prompt_tokens,
            cached_tokens=done.cached_tokens, output_tokens=done.completion_tokens, retractions=done.retractions,
            finish_reason=str(done.finish_reason.get("type")),
        ))
        self._session_end[key] = max(self._session_end.get(key, now_s), now_s)
        for ready in self._tracker.complete(request.request_id, now_s * 1000.0):
            self._schedule(ready)
        if self._tracker.session_finished(key):
            self._session_replica.pop(key, None)
            if bundle.cache_hints is not None and request.session_id is not None:
                bundle.cache_hints.on_session_end(request.session_id, now_s)
            if self._loop is not None:
                for nxt in self._loop.on_session_finished(key):
                    self._start_session(nxt, now_s)

    def _tell_outcome(self, live: _Live, done: FinishedRequest, now_s: float) -> None:
        """``CallOutcome`` to the priority and cache-hint policies; schedule their prefetches."""
        bundle = self.bundle
        info, replica_id, request = live.info, live.replica_id, live.request
        ok = done.finish_reason.get("type") != "abort"
        ttft = (done.first_token_s if done.first_token_s is not None else done.finish_s) - done.arrival_s
        prefill_s = self.step_time.prefill_s([max(done.prompt_tokens - done.cached_tokens, 1)], [done.cached_tokens])
        queue_s = max(ttft - prefill_s, 0.0)  # the engine does not report when it first scheduled the call
        outcome = CallOutcome(
            call=info,
            replica_id=replica_id,
            prompt_tokens=done.prompt_tokens,
            cached_tokens=done.cached_tokens,
            output_tokens=done.completion_tokens,
            queue_s=queue_s,
            service_s=done.finish_s - done.arrival_s - queue_s,
            finished_s=done.finish_s,
            ok=ok,
            ends_with_tool_call=request.request_id in self._tool_after,
        )
        if bundle.priority is not None:
            bundle.priority.on_finish(outcome, now_s)
        if bundle.cache_hints is not None:
            for action in bundle.cache_hints.on_finish(outcome, now_s):
                if self.config.prefetch:
                    self.prefetcher.schedule(action)

    # ------------------------------------------------------------------ scaling
    # ScaleHost: what the scale driver asks of the runner
    def serving_views(self) -> list[ReplicaView]:
        return self.replica_views.views([])

    def session_replicas(self) -> tuple[tuple[str, str], ...]:
        return tuple(self._session_replica.values())

    def calls_on(self, replica_id: str) -> int:
        return self.replica_views.calls_on(replica_id)

    def open_replica(self, replica_id: str) -> None:
        self.cluster.add_replica(replica_id)
        self.replica_views.add(replica_id)

    def close_replica(self, replica_id: str) -> None:
        load = self.cluster.load(replica_id)
        retired = self._retired
        retired.busy_s[replica_id] = self.cluster.busy_seconds(replica_id)
        retired.retractions += load.retractions_total
        retired.preemptions += load.preemptions_total
        self.cluster.remove_replica(replica_id)
        self.replica_views.remove(replica_id)

    def forget_view(self, replica_id: str) -> None:
        self.replica_views.forget(replica_id)
