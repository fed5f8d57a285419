"""Replica lifecycle in the offline replay: cold start, serving, draining, removal.

The replay drives a ``Scaler`` (``policy/types.py``) the way an autoscaling controller
would (Knative's autoscaler, Dynamo's planner): at each tick it shows the scaler the
serving replicas (``ReplicaView``, draining ones excluded), how many are still starting,
and where each live session's last call ran; it acts on the ``ScaleDecision`` by the rule
``pythia_server/fleet.py`` states for both drivers (drain, revive, launch with a cold start
of ``cold_start_s``, 30 s by default, cancel the newest starts); drained replicas are removed
when they hold no call and no engine work, and the next tick is at ``next_tick_s`` (at least
``MIN_TICK_S`` later). :class:`ScaleDriver` acts on the virtual cluster and asks the runner
(a :class:`ScaleHost`) for what only it knows; the gateway's ``gateway/autoscaling.py`` does
the same with processes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Protocol

from pythia_server.engine.virtual import VirtualCluster
from pythia_server.fleet import ReplicaFleet, ReplicaSpan, ScaleRecord, replica_seconds
from pythia_server.policy.types import ReplicaView, Scaler, ScaleTick

__all__ = [
    "MIN_TICK_S", "PeriodicTicks", "ReplicaFleet", "ReplicaSpan", "ScaleDriver", "ScaleHost", "ScaleRecord",
    "replica_seconds",
]

MIN_TICK_S = 0.1  # a scaler asking to be ticked again sooner is ticked this much later


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
        change = fleet.apply(decision, now_s)
        for replica_id in change.drained:
            self.host.forget_view(replica_id)
            self.cluster.call_at(now_s, partial(self.remove_if_drained, replica_id))
        for replica_id, ready_s in change.launched:
            self.cluster.call_at(ready_s, partial(self._ready, replica_id))
        self.peak_replicas = max(self.peak_replicas, fleet.up)
        self.log.append(fleet.record(now_s, decision))
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
