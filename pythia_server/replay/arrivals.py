"""When sessions start: open-loop arrival processes and a closed-loop admission object.

A workload's calls are ordered inside a session by ``wait_for``; only roots carry a time
(``timestamp``). An arrival process therefore times *sessions*: :func:`apply_arrivals`
moves every timestamp of a session by the same amount, so a session's own offsets
(several roots, recorded sub-agent starts) are kept. Processes:

- :class:`RecordedArrivals`: keep the recorded session starts (optionally sped up).
- :class:`TraceArrivals`: take session starts from an arrival trace, e.g. the request
  timestamps of the Azure LLM inference traces (``read_arrival_times``; the k-th session
  starts at the k-th arrival, relative to the first, divided by ``speedup``).
- :class:`PoissonArrivals`: a homogeneous Poisson process of ``rate_per_s`` sessions/s.
- :class:`BurstyArrivals`: a Poisson process whose rate is ``rate_per_s`` until
  ``burst_at_s``, rises linearly to ``burst_factor`` x (default +50%) over ``ramp_s``
  (default one minute), holds for ``hold_s``, then drops back; with ``period_s`` the burst
  repeats every period. Sampled by thinning, so it is exact for the piecewise-linear rate.
- :class:`ClosedLoop`: concurrency C. Not expressible in a file (it depends on when
  sessions finish), so the replay driver consumes it: it starts the first C sessions,
  then one more each time one finishes (all its calls complete), as Dynamo's mocker
  ``ConcurrencyState`` does. Sessions keep their recorded relative offsets: a root is ready
  at ``session start + (timestamp - recorded session start)``, see :func:`session_starts_ms`.

All processes are seeded and pure: the same arguments give the same times.
"""

from __future__ import annotations

import csv
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Protocol

from pythia_server.replay.workload import (
    WorkloadError,
    WorkloadRequest,
    load_workload,
    session_key,
    session_keys,
)

__all__ = [
    "ArrivalProcess",
    "BurstyArrivals",
    "ClosedLoop",
    "PoissonArrivals",
    "RecordedArrivals",
    "TraceArrivals",
    "apply_arrivals",
    "read_arrival_times",
    "session_starts_ms",
]


class ArrivalProcess(Protocol):
    def session_starts_s(self, recorded_s: Sequence[float]) -> list[float]:
        """Start times (s, non-decreasing) for sessions whose recorded starts are given."""
        ...


@dataclass(frozen=True, slots=True)
class RecordedArrivals:
    speedup: float = 1.0

    def session_starts_s(self, recorded_s: Sequence[float]) -> list[float]:
        if self.speedup <= 0:
            raise ValueError("speedup must be positive")
        origin = min(recorded_s, default=0.0)
        return [(t - origin) / self.speedup for t in recorded_s]


@dataclass(frozen=True, slots=True)
class TraceArrivals:
    times_s: tuple[float, ...]
    speedup: float = 1.0

    def session_starts_s(self, recorded_s: Sequence[float]) -> list[float]:
        if self.speedup <= 0:
            raise ValueError("speedup must be positive")
        if len(self.times_s) < len(recorded_s):
            raise ValueError(
                f"the arrival trace has {len(self.times_s)} arrivals for {len(recorded_s)} sessions"
            )
        ordered = sorted(self.times_s)[: len(recorded_s)]
        origin = ordered[0] if ordered else 0.0
        return [(t - origin) / self.speedup for t in ordered]


def read_arrival_times(path: str | Path) -> tuple[float, ...]:
    """Arrival times (s) from an Azure trace CSV (``TIMESTAMP`` column, ISO date-times) or
    from a workload file (its sessions' recorded starts)."""
    path = Path(path)
    if path.suffix == ".csv":
        try:
            with path.open(newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                if reader.fieldnames is None or "TIMESTAMP" not in reader.fieldnames:
                    raise WorkloadError(f"{path}: no TIMESTAMP column")
                times = []
                for number, row in enumerate(reader, start=2):
                    try:
                        times.append(
                            datetime.fromisoformat(row["TIMESTAMP"]).timestamp()
                        )
                    except (TypeError, ValueError) as exc:
                        raise WorkloadError(
                            f"{path}:{number}: bad TIMESTAMP {row['TIMESTAMP']!r}"
                        ) from exc
        except OSError as exc:
            raise WorkloadError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        if not times:
            raise WorkloadError(f"{path}: no arrivals")
        return tuple(times)
    return tuple(t / 1000.0 for t in session_starts_ms(load_workload(path)).values())


@dataclass(frozen=True, slots=True)
class PoissonArrivals:
    rate_per_s: float
    seed: int = 0

    def session_starts_s(self, recorded_s: Sequence[float]) -> list[float]:
        if self.rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        rng = random.Random(self.seed)
        now_s, starts = 0.0, []
        for _ in recorded_s:
            starts.append(now_s)
            now_s += rng.expovariate(self.rate_per_s)
        return starts


@dataclass(frozen=True, slots=True)
class BurstyArrivals:
    rate_per_s: float
    seed: int = 0
    burst_at_s: float = 120.0
    ramp_s: float = 60.0
    hold_s: float = 300.0
    burst_factor: float = 1.5
    period_s: float | None = None

    def rate_at(self, t_s: float) -> float:
        """The instantaneous rate (sessions/s) at ``t_s``."""
        if self.period_s is not None and t_s >= self.burst_at_s:
            t_s = self.burst_at_s + (t_s - self.burst_at_s) % self.period_s
        into = t_s - self.burst_at_s
        extra = self.burst_factor - 1.0
        if into < 0 or into >= self.ramp_s + self.hold_s:
            return self.rate_per_s
        if into < self.ramp_s:
            return self.rate_per_s * (1.0 + extra * into / self.ramp_s)
        return self.rate_per_s * self.burst_factor

    def session_starts_s(self, recorded_s: Sequence[float]) -> list[float]:
        if (
            self.rate_per_s <= 0
            or self.burst_factor < 1.0
            or self.ramp_s < 0
            or self.hold_s < 0
        ):
            raise ValueError(
                "need rate_per_s > 0, burst_factor >= 1, ramp_s and hold_s >= 0"
            )
        if self.period_s is not None and self.period_s < self.ramp_s + self.hold_s:
            raise ValueError("period_s must cover ramp_s + hold_s")
        rng = random.Random(self.seed)
        peak = self.rate_per_s * self.burst_factor
        now_s, starts = 0.0, [0.0] if recorded_s else []
        while len(starts) < len(recorded_s):
            now_s += rng.expovariate(peak)
            if rng.random() * peak <= self.rate_at(now_s):
                starts.append(now_s)
        return starts


def session_starts_ms(requests: Sequence[WorkloadRequest]) -> dict[str, float]:
    """Each session's recorded start (its earliest root timestamp, ms), by session key
    (``session_id``, or ``request:<id>`` for a call without one), in start order."""
    starts = {key: float("inf") for key in session_keys(requests)}
    for r in requests:
        if r.is_root:
            key = session_key(r)
            starts[key] = min(starts[key], r.timestamp_ms or 0.0)
    ordered = sorted(enumerate(starts.items()), key=lambda item: (item[1][1], item[0]))
    return {
        key: (0.0 if start == float("inf") else start) for _, (key, start) in ordered
    }


def apply_arrivals(
    requests: Sequence[WorkloadRequest], process: ArrivalProcess
) -> list[WorkloadRequest]:
    """Re-time sessions: the k-th session to start (recorded order) starts at the k-th time."""
    recorded = session_starts_ms(requests)
    new_starts_s = process.session_starts_s([t / 1000.0 for t in recorded.values()])
    shift_ms = {
        key: round(new_s * 1000.0, 3) - old
        for (key, old), new_s in zip(recorded.items(), new_starts_s)
    }
    out: list[WorkloadRequest] = []
    for r in requests:
        key = session_key(r)
        if r.timestamp_ms is None and not r.is_root:
            out.append(r)
            continue
        moved = round((r.timestamp_ms or 0.0) + shift_ms[key], 3)
        out.append(replace(r, timestamp_ms=max(0.0, moved)))
    return out


class ClosedLoop:
    """Concurrency-C admission: at most C sessions live; the next starts when one ends.

    The replay driver calls :meth:`start` once at time 0 and :meth:`on_session_finished`
    whenever every call of a session has completed; both return the session keys to start
    now, in recorded order.
    """

    def __init__(self, session_order: Sequence[str], concurrency: int) -> None:
        if concurrency <= 0:
            raise ValueError("concurrency must be positive")
        self.concurrency = concurrency
        self._pending = deque(session_order)
        self._live: set[str] = set()

    @classmethod
    def for_workload(
        cls, requests: Sequence[WorkloadRequest], concurrency: int
    ) -> ClosedLoop:
        return cls(list(session_starts_ms(requests)), concurrency)

    def start(self) -> list[str]:
        return self._admit()

    def on_session_finished(self, session_key: str) -> list[str]:
        if session_key not in self._live:
            raise ValueError(f"session {session_key!r} is not live")
        self._live.remove(session_key)
        return self._admit()

    @property
    def live(self) -> frozenset[str]:
        return frozenset(self._live)

    @property
    def done(self) -> bool:
        return not self._pending and not self._live

    def _admit(self) -> list[str]:
        started: list[str] = []
        while self._pending and len(self._live) < self.concurrency:
            key = self._pending.popleft()
            self._live.add(key)
            started.append(key)
        return started
