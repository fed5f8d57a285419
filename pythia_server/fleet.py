"""Replica lifecycle bookkeeping shared by the offline replay and the live gateway.

A ``Scaler`` (``policy/types.py``) names a target replica count and replicas to drain;
:meth:`ReplicaFleet.apply` turns that decision into lifecycle changes, one rule for both
drivers so the replay measures exactly what the gateway does:

- the replicas named in ``drain`` stop taking new calls at once; the driver removes each
  when it holds no call (the last serving replica is never drained);
- if the target (serving + starting) is above the current count, draining replicas are
  brought back first (still up, cache warm), then new ones launched: a new replica serves
  once its cold start ends (model load and warm-up);
- if it is below, the most recently launched replicas still starting are cancelled;
  serving replicas leave only when named in ``drain`` (the scaler chooses whom).

A replica costs from launch to removal (or to the end of the run), cold start included:
``ReplicaSpan`` records it, ``replica_seconds`` clips it to a window. Nothing here reads a
clock: times come in as ``now_s``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pythia_server.policy.types import ScaleDecision

__all__ = ["FleetChange", "ReplicaFleet", "ReplicaSpan", "ScaleRecord", "replica_seconds"]


@dataclass(frozen=True, slots=True)
class ReplicaSpan:
    """One replica's life, in the driver's seconds."""

    replica_id: str
    launched_s: float
    serving_s: float | None  # None: cancelled before its cold start ended
    removed_s: float | None  # None: still up when the run ended

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


@dataclass(frozen=True, slots=True)
class FleetChange:
    """What one decision changed; the driver realises it (processes, routing views)."""

    drained: tuple[str, ...] = ()
    revived: tuple[str, ...] = ()
    launched: tuple[tuple[str, float], ...] = ()  # (replica id, when its cold start ends)
    cancelled: tuple[str, ...] = ()


def replica_seconds(spans: tuple[ReplicaSpan, ...], start_s: float, end_s: float) -> float:
    return sum(span.seconds(start_s, end_s) for span in spans)


@dataclass(slots=True)
class _Life:
    launched_s: float
    serving_s: float | None = None
    removed_s: float | None = None


@dataclass(slots=True)
class ReplicaFleet:
    """Which replicas exist and in what state; ``serving`` keeps launch order.

    Ids are ``{id_prefix}{n}`` in launch order (the gateway's spawned simulators are
    ``sim-0``, ``sim-1``, ...; the replay's ``r0``, ``r1``, ...).
    """

    cold_start_s: float = 30.0
    id_prefix: str = "r"
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

    def failed(self, replica_id: str, now_s: float) -> bool:
        """A launch that never became ready (the process failed): gone, paid until now."""
        if self.starting.pop(replica_id, None) is None:
            return False
        self._lives[replica_id].removed_s = now_s
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

    def apply(self, decision: ScaleDecision, now_s: float) -> FleetChange:
        """Act on a scaler's decision as the module docstring says."""
        drained = tuple(r for r in decision.drain if self.drain(r))
        want = max(decision.target_replicas, 1)
        current = len(self.serving) + len(self.starting)
        revived: list[str] = []
        while current < want and self.draining and self.draining[-1] not in drained:
            revived.append(self.draining[-1])
            self.revive()  # still up, cache warm: cheaper than a cold start
            current += 1
        launched: list[tuple[str, float]] = []
        while current < want:
            launched.append(self.launch(now_s))
            current += 1
        cancelled: list[str] = []
        while current > want:
            replica_id = self.cancel_newest_start(now_s)
            if replica_id is None:
                break
            cancelled.append(replica_id)
            current -= 1
        return FleetChange(drained, tuple(revived), tuple(launched), tuple(cancelled))

    def record(self, now_s: float, decision: ScaleDecision) -> ScaleRecord:
        return ScaleRecord(now_s, decision.target_replicas, len(self.serving), len(self.starting),
                           len(self.draining), decision.reason)

    @property
    def up(self) -> int:
        """Replicas being paid for now: serving, starting or draining."""
        return len(self.serving) + len(self.starting) + len(self.draining)

    def spans(self) -> tuple[ReplicaSpan, ...]:
        return tuple(ReplicaSpan(r, life.launched_s, life.serving_s, life.removed_s) for r, life in self._lives.items())

    def _new_id(self) -> str:
        replica_id = f"{self.id_prefix}{self._next}"
        self._next += 1
        return replica_id

    def _order(self, replica_id: str) -> int:
        return int(replica_id[len(self.id_prefix):])
