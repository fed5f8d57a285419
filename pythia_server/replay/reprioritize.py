"""Re-asking the priority policy for calls still waiting: ageing and anti-starvation offline.

A gateway in front of SGLang fixes a call's priority at submission (SGLang has no request
that changes a queued request's priority; docs/engine.md). The simulated engine can, so
the replay re-asks the bundle's ``PriorityPolicy`` for every waiting workload call every
``every_s`` virtual seconds and applies what changed with ``VirtualCluster.set_priority``.
The rate is bounded by the period, not by events: cost is (waiting calls) per tick.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from pythia_server.engine.virtual import VirtualCluster
from pythia_server.policy.types import CallInfo, PriorityPolicy
from pythia_server.replay.scaling import PeriodicTicks

__all__ = ["Reprioritizer"]


class QueuedCall(Protocol):
    """The runner's record of a call in flight, as far as re-prioritisation needs it."""

    info: CallInfo
    current_priority: int | None


class Reprioritizer:
    """Every ``every_s``: ask ``policy`` again for each waiting call on the given replicas."""

    def __init__(self, policy: PriorityPolicy, every_s: float, cluster: VirtualCluster, ticks: PeriodicTicks,
                 calls: Mapping[str, QueuedCall], replicas: Callable[[], Iterable[str]]) -> None:
        if every_s <= 0:
            raise ValueError("every_s must be positive")
        self.policy, self.every_s, self.cluster, self.ticks = policy, every_s, cluster, ticks
        self._calls, self._replicas = calls, replicas
        self.changed = 0  # priorities changed after submission

    def start(self) -> None:
        self.ticks.at(self.every_s, self.tick)

    def tick(self) -> None:
        now_s = self.cluster.now_s
        for replica_id in self._replicas():
            engine = self.cluster.engine(replica_id)
            if not engine.num_waiting:
                continue
            for call_id in engine.waiting_rids():
                call = self._calls.get(call_id)
                if call is None:
                    continue  # a prefetch
                value = self.policy.priority(call.info, now_s)
                if value != call.current_priority and self.cluster.set_priority(replica_id, call_id, value):
                    call.current_priority = value
                    self.changed += 1
        self.ticks.again(now_s + self.every_s, self.tick)
