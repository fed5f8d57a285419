"""The virtual-clock driver: N simulated replicas and a discrete-event loop.

One heap of ``(time, seq, callback)`` orders everything (SimPy's shape): replica steps,
the ends of decode runs, and whatever the replay driver schedules with ``call_at``
(arrivals, tool waits, prefetches). Callbacks run with ``now_s`` set to their time and
may submit, abort and schedule more. Nothing reads a wall clock.

Speed: a replica in a pure decode phase does not step token by token. The engine plans
a run of identical decode steps up to the next point where its batch would change (a
request's last token, the KV it can reserve); an arrival on that replica cuts the run
at the end of the step in progress, so the new request is scheduled exactly when
SGLang's loop would see it. Per-token Python work is therefore proportional to events,
not tokens.
"""

from __future__ import annotations

import gc
import heapq
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pythia_server.engine.core import Engine
from pythia_server.engine.events import KvEventListener
from pythia_server.engine.radix_cache import EvictionKey
from pythia_server.engine.step_time import StepTimeModel
from pythia_server.engine.types import (
    DecodeRun,
    EngineConfig,
    EngineLoad,
    FinishedRequest,
    GenerateRequest,
    StepResult,
)

__all__ = ["VirtualCluster"]

FinishCallback = Callable[[FinishedRequest], None]


@dataclass(slots=True)
class _Replica:
    replica_id: str
    engine: Engine
    busy: bool = False  # a step or run is scheduled
    run: DecodeRun | None = None
    run_end_steps: int = 0
    generation: int = 0  # invalidates superseded run-end events
    pending_aborts: list[str] = field(default_factory=list)
    callbacks: dict[str, FinishCallback] = field(default_factory=dict)
    steps: int = 0
    busy_s: float = 0.0


class VirtualCluster:
    """Simulated SGLang replicas sharing one virtual clock."""

    def __init__(
        self,
        replica_ids: Sequence[str],
        config: EngineConfig | None = None,
        step_time: StepTimeModel | None = None,
        max_decode_steps: int = 4096,
        kv_listener: Callable[[str], KvEventListener | None] | None = None,
        on_step: Callable[[str, StepResult], None] | None = None,
        eviction_key: Callable[[str], EvictionKey | None] | None = None,
    ) -> None:
        """``kv_listener`` and ``eviction_key`` are per-replica factories (given the replica id)."""
        if not replica_ids:
            raise ValueError("at least one replica is needed")
        step_time = step_time or StepTimeModel.load()
        config = config or EngineConfig()
        self._config, self._step_time = config, step_time
        self._kv_listener, self._eviction_key = kv_listener, eviction_key
        self.now_s = 0.0
        self.max_decode_steps = max_decode_steps
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._on_step = on_step
        self._replicas: dict[str, _Replica] = {}
        for rid in replica_ids:
            self.add_replica(rid)
        self.events_processed = 0

    # ------------------------------------------------------------------ queries
    @property
    def replica_ids(self) -> list[str]:
        return list(self._replicas)

    def engine(self, replica_id: str) -> Engine:
        return self._replicas[replica_id].engine

    def load(self, replica_id: str) -> EngineLoad:
        return self._replicas[replica_id].engine.load()

    @property
    def pending_events(self) -> int:
        """Events scheduled and not yet run (a driver's periodic ticks stop when only they remain)."""
        return len(self._heap)

    def busy_seconds(self, replica_id: str) -> float:
        """Virtual time the replica spent stepping (for utilisation and replica-seconds)."""
        return self._replicas[replica_id].busy_s

    # ------------------------------------------------------------------ scaling
    def add_replica(self, replica_id: str) -> None:
        """A new, empty replica (an autoscaler's scale-up; start-up delay is the driver's)."""
        if replica_id in self._replicas:
            raise ValueError(f"replica {replica_id!r} already exists")
        listener = self._kv_listener(replica_id) if self._kv_listener else None
        key = self._eviction_key(replica_id) if self._eviction_key else None
        engine = Engine(self._config, self._step_time, listener, stream_tokens=False, eviction_key=key)
        self._replicas[replica_id] = _Replica(replica_id, engine)

    def remove_replica(self, replica_id: str) -> None:
        """Drop an idle replica (drain it first: route nothing new to it, wait for ``is_idle``)."""
        if not self.is_idle(replica_id):
            raise ValueError(f"replica {replica_id!r} still has work; drain it first")
        del self._replicas[replica_id]

    def is_idle(self, replica_id: str) -> bool:
        replica = self._replicas[replica_id]
        return not replica.busy and not replica.engine.has_work

    # ------------------------------------------------------------------ driver API
    def call_at(self, at_s: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` at virtual time ``at_s`` (not before now)."""
        heapq.heappush(self._heap, (max(at_s, self.now_s), next(self._seq), callback))

    def submit(self, replica_id: str, request: GenerateRequest, on_finish: FinishCallback) -> None:
        """Queue ``request`` on a replica now; ``on_finish`` runs when it ends (or is aborted)."""
        replica = self._replicas[replica_id]
        replica.engine.submit(request, self.now_s)
        replica.callbacks[request.rid] = on_finish
        if replica.run is not None:
            self._cut_run(replica)
        else:
            self._kick(replica)

    def abort(self, replica_id: str, rid: str) -> None:
        """Abort at the end of the current step; ``on_finish`` gets an abort reason."""
        replica = self._replicas[replica_id]
        if replica.run is None:
            self._abort_now(replica, rid)
        else:
            replica.pending_aborts.append(rid)
            self._cut_run(replica)

    def set_priority(self, replica_id: str, rid: str, priority: int | None) -> bool:
        """Re-prioritise a queued request now (``Engine.set_priority``); False if not waiting.

        With priority preemption on, a decode run in progress is cut at the end of its
        current step, so the request can preempt when SGLang's loop next looks.
        """
        replica = self._replicas[replica_id]
        if not replica.engine.set_priority(rid, priority, self.now_s):
            return False
        config = replica.engine.config
        if config.enable_priority_scheduling and config.enable_priority_preemption:
            if replica.run is not None:
                self._cut_run(replica)
            else:
                self._kick(replica)
        return True

    def run(self, until_s: float | None = None) -> float:
        """Process events in time order until none are left (or until ``until_s``).

        Python's cyclic garbage collector is made lazier for the duration (a radix tree
        holds many objects and full collections cost ~10% of a long replay); the
        previous thresholds are restored on return.
        """
        heap = self._heap
        thresholds = gc.get_threshold()
        gc.set_threshold(max(thresholds[0], 100_000), *thresholds[1:])
        try:
            while heap:
                if until_s is not None and heap[0][0] > until_s:
                    self.now_s = until_s
                    break
                at_s, _, callback = heapq.heappop(heap)
                self.now_s = at_s
                self.events_processed += 1
                callback()
        finally:
            gc.set_threshold(*thresholds)
        return self.now_s

    # ------------------------------------------------------------------ stepping
    def _kick(self, replica: _Replica) -> None:
        if not replica.busy and replica.engine.has_work:
            replica.busy = True
            self.call_at(self.now_s, lambda: self._step(replica))

    def _step(self, replica: _Replica) -> None:
        outcome = replica.engine.next_step(self.now_s, self.max_decode_steps)
        if outcome is None:
            replica.busy = False  # waiting work that cannot start until something changes
            return
        replica.steps += 1
        if isinstance(outcome, DecodeRun):
            replica.run = outcome
            replica.generation += 1
            self._schedule_run_end(replica, outcome.steps)
            return
        self.call_at(outcome.end_s, lambda: self._step_done(replica, outcome))

    def _schedule_run_end(self, replica: _Replica, steps: int) -> None:
        run = replica.run
        assert run is not None
        generation = replica.generation
        replica.run_end_steps = steps

        def end() -> None:
            if generation == replica.generation:
                self._end_run(replica, steps)

        self.call_at(run.start_s + steps * run.step_s, end)

    def _cut_run(self, replica: _Replica) -> None:
        run = replica.run
        assert run is not None
        steps = run.steps_done_by(self.now_s)
        if steps < replica.run_end_steps:
            replica.generation += 1
            self._schedule_run_end(replica, steps)

    def _end_run(self, replica: _Replica, steps: int) -> None:
        run = replica.run
        assert run is not None
        replica.run = None
        result = replica.engine.finish_decode_run(run, steps)
        for rid in replica.pending_aborts:
            self._abort_now(replica, rid)
        replica.pending_aborts.clear()
        self._step_done(replica, result)

    def _step_done(self, replica: _Replica, result: StepResult) -> None:
        replica.busy_s += result.duration_s
        if self._on_step is not None:
            self._on_step(replica.replica_id, result)
        for finished in result.finished:
            callback = replica.callbacks.pop(finished.rid, None)
            if callback is not None:
                callback(finished)
        if replica.engine.has_work:
            self._step(replica)  # back to back, as SGLang's loop runs
        else:
            replica.busy = False

    def _abort_now(self, replica: _Replica, rid: str) -> None:
        finished = replica.engine.abort(rid, self.now_s)
        if finished is None:
            return  # unknown, or it finished in the step under way: its callback comes then
        callback = replica.callbacks.pop(rid, None)
        if callback is not None:
            callback(finished)
