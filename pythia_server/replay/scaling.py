"""Replica lifecycle in the offline replay: cold start, serving, draining, removal.

The replay drives a ``Scaler`` (``policy/types.py``) the way an autoscaling controller
would (Knative's autoscaler, Dynamo's planner): at each tick it shows the scaler the
serving replicas (``ReplicaView``, draining ones excluded), how many are still starting,
and where each live session's last call ran; it acts on the ``ScaleDecision``:

- the replicas named in ``drain`` stop taking new calls at once and are removed when they
  hold no call and no engine work (the last serving replica is never drained);
- if the target (serving + starting) is above the current count, draining replicas are
  brought back first (still up, cache warm), then new ones launched: a new replica serves
  only ``cold_start_s`` after its launch (model load and warm-up; 30 s by default);
- if it is below, the most recently launched replicas still starting are cancelled;
  serving replicas leave only when named in ``drain`` (the scaler chooses whom);
- the next tick is at ``next_tick_s`` (at least ``MIN_TICK_S`` later).

A replica costs from launch to removal (or to the end of the run), cold start included:
``ReplicaSpan`` records it, ``replica_seconds`` clips it to a window. :class:`ReplicaFleet`
is pure bookkeeping (no clock); :class:`ScaleDriver` acts on the virtual cluster and asks
the runner (a :class:`ScaleHost`) for what only it knows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from pythia_server.engine.virtual import VirtualCluster
from pythia_server.policy.types import ReplicaView, Scaler, ScaleTick

__all__ = [
    "MIN_TICK_S", "PeriodicTicks", "ReplicaFleet", "ReplicaSpan", "ScaleDriver", "ScaleHost", "ScaleRecord",
    "replica_seconds",
]

MIN_TICK_S = 0.1  # a scaler asking to be ticked again sooner is ticked this much later


@dataclass(frozen=True, slots=True)
class ReplicaSpan:
    """One replica's life in a replay, in virtual seconds."""

    replica_id: str
    launched_s: float
    serving_s: float | None  # None: cancelled before its cold start ended
    removed_s: float | None  # None: still up when the replay ended

    def seconds(self, start_s: float, end_s: float) -> float:
        """Time up (launch to removal) inside [start_s, end_s]."""
        until = end_s if self.removed_s is None else min(self.removed_s, end_s)
        return max(until - max(self.launched_s, start_s), 0.0)


@dataclass(frozen=True, slots=True)
class ScaleRecord:
    """One scaler tick as acted on, for reports."""

    at_s: float
    target_replicas: int
    serving: int  # after acting
    starting: int
    draining: int
    reason: str


def replica_seconds(spans: tuple[ReplicaSpan, ...], start_s: float, end_s: float) -> float:
    return sum(span.seconds(start_s, end_s) for span in spans)


@dataclass(slots=True)
class _Life:
    launched_s: float
    serving_s: float | None = None
    removed_s: float | None = None


@dataclass(slots=True)
class ReplicaFleet:
    """Which replicas exist and in what state; ``serving`` keeps launch order."""

    cold_start_s: float = 30.0
    serving: list[str] = field(default_factory=list)
    starting: dict[str, float] = field(default_factory=dict)  # replica id -> when it will serve
    draining: list[str] = field(default_factory=list)
    _lives: dict[str, _Life] = field(default_factory=dict)
    _next: int = 0

    def __post_init__(self) -> None:
        if self.cold_start_s < 0:
            raise ValueError("cold_start_s must not be negative")

    def add_serving(self, now_s: float) -> str:
        """A replica that serves at once (the initial pool)."""
        replica_id = self._new_id()
        self._lives[replica_id] = _Life(now_s, now_s)
        self.serving.append(replica_id)
        return replica_id

    def launch(self, now_s: float) -> tuple[str, float]:
        """A new replica; returns its id and when its cold start ends."""
        replica_id = self._new_id()
        self._lives[replica_id] = _Life(now_s)
        ready_s = now_s + self.cold_start_s
        self.starting[replica_id] = ready_s
        return replica_id, ready_s

    def ready(self, replica_id: str, now_s: float) -> bool:
        """End a cold start; False if the launch was cancelled meanwhile."""
        if self.starting.pop(replica_id, None) is None:
            return False
        self._lives[replica_id].serving_s = now_s
        self.serving.append(replica_id)
        return True

    def cancel_newest_start(self, now_s: float) -> str | None:
        if not self.starting:
            return None
        replica_id = max(self.starting, key=lambda r: (self._lives[r].launched_s, self._order(r)))
        del self.starting[replica_id]
        self._lives[replica_id].removed_s = now_s
        return replica_id

    def drain(self, replica_id: str) -> bool:
        """Stop routing to a serving replica; refused for the last one serving."""
        if replica_id not in self.serving or len(self.serving) <= 1:
            return False
        self.serving.remove(replica_id)
        self.draining.append(replica_id)
        return True

    def revive(self) -> str | None:
        """Bring the most recently drained replica back to serving."""
        if not self.draining:
            return None
        replica_id = self.draining.pop()
        self.serving.append(replica_id)
        return replica_id

    def remove(self, replica_id: str, now_s: float) -> None:
        self.draining.remove(replica_id)
        self._lives[replica_id].removed_s = now_s

    def is_serving(self, replica_id: str) -> bool:
        return replica_id in self.serving

    @property
    def up(self) -> int:
        """Replicas being paid for now: serving, starting or draining."""
        return len(self.serving) + len(self.starting) + len(self.draining)

    def spans(self) -> tuple[ReplicaSpan, ...]:
        return tuple(ReplicaSpan(r, life.launched_s, life.serving_s, life.removed_s) for r, life in self._lives.items())

    def _new_id(self) -> str:
        replica_id = f"r{self._next}"
        self._next += 1
        return replica_id

    @staticmethod
    def _order(replica_id: str) -> int:
        return int(replica_id[1:])


class PeriodicTicks:
    """Driver ticks on the cluster's heap that stop once nothing but ticks is pending."""

    def __init__(self, cluster: VirtualCluster) -> None:
        self.cluster = cluster
        self._pending = 0

    def at(self, at_s: float, tick: Callable[[], None]) -> None:
        self._pending += 1

        def run() -> None:
            self._pending -= 1
            tick()

        self.cluster.call_at(at_s, run)

    def again(self, at_s: float, tick: Callable[[], None]) -> None:
        """Schedule the next tick unless the replay has nothing else left to do."""
        if self.cluster.pending_events > self._pending:
            self.at(at_s, tick)


class ScaleHost(Protocol):
    """What the scale driver needs from the replay runner."""

    def serving_views(self) -> list[ReplicaView]: ...

    def session_replicas(self) -> tuple[tuple[str, str], ...]: ...

    def calls_on(self, replica_id: str) -> int: ...

    def open_replica(self, replica_id: str) -> None:
        """Add a replica whose cold start ended to the cluster and the routing view."""
        ...

    def close_replica(self, replica_id: str) -> None:
        """Keep an empty drained replica's counters, then drop it from the cluster."""
        ...

    def forget_view(self, replica_id: str) -> None: ...


class ScaleDriver:
    """Ticks a ``Scaler`` and acts on its decisions (the module docstring says how)."""

    def __init__(self, scaler: Scaler, fleet: ReplicaFleet, cluster: VirtualCluster, host: ScaleHost,
                 ticks: PeriodicTicks) -> None:
        self.scaler, self.fleet, self.cluster, self.host, self.ticks = scaler, fleet, cluster, host, ticks
        self.log: list[ScaleRecord] = []
        self.peak_replicas = fleet.up

    def start(self) -> None:
        self.ticks.at(0.0, self.tick)

    def tick(self) -> None:
        fleet, now_s = self.fleet, self.cluster.now_s
        decision = self.scaler.decide(ScaleTick(
            now_s=now_s,
            replicas=tuple(self.host.serving_views()),
            starting_replicas=len(fleet.starting),
            session_replicas=self.host.session_replicas(),
        ))
        drained = [r for r in decision.drain if fleet.drain(r)]
        for replica_id in drained:
            self.host.forget_view(replica_id)
            self.cluster.call_at(now_s, partial(self.remove_if_drained, replica_id))
        want = max(decision.target_replicas, 1)
        current = len(fleet.serving) + len(fleet.starting)
        while current < want and fleet.draining and fleet.draining[-1] not in drained:
            fleet.revive()  # still up, cache warm: cheaper than a cold start
            current += 1
        while current < want:
            replica_id, ready_s = fleet.launch(now_s)
            self.cluster.call_at(ready_s, partial(self._ready, replica_id))
            current += 1
        while current > want and fleet.cancel_newest_start(now_s) is not None:
            current -= 1
        self.peak_replicas = max(self.peak_replicas, fleet.up)
        self.log.append(ScaleRecord(now_s, decision.target_replicas, len(fleet.serving), len(fleet.starting),
                                    len(fleet.draining), decision.reason))
        self.ticks.again(max(decision.next_tick_s, now_s + MIN_TICK_S), self.tick)

    def call_finished(self, replica_id: str) -> None:
        """A call ended on ``replica_id``: a draining replica may now be empty (checked after the step)."""
        if replica_id in self.fleet.draining and not self.host.calls_on(replica_id):
            self.cluster.call_at(self.cluster.now_s, lambda: self.remove_if_drained(replica_id))

    def remove_if_drained(self, replica_id: str) -> None:
        """Remove a draining replica once it holds no call and no engine work."""
        if replica_id not in self.fleet.draining or self.host.calls_on(replica_id):
            return
        if not self.cluster.is_idle(replica_id):  # a prefetch still running: look again shortly
            self.cluster.call_at(self.cluster.now_s + MIN_TICK_S, lambda: self.remove_if_drained(replica_id))
            return
        self.host.close_replica(replica_id)
        self.fleet.remove(replica_id, self.cluster.now_s)

    def _ready(self, replica_id: str) -> None:
        if self.fleet.ready(replica_id, self.cluster.now_s):
            self.host.open_replica(replica_id)
