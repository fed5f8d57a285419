"""When each call of a workload becomes ready, given when its dependencies completed.

The rule is Dynamo's agentic replay (``lib/mocker/src/loadgen/driver.rs``,
``AgenticState::release_dependents``), so any driver that asks this object replays a file
exactly as ``python -m dynamo.replay --trace-format agentic_mooncake`` does:

- a root (no ``wait_for``) is ready at its ``timestamp`` (0 when missing), or, when the
  driver starts its session itself (closed loop), at ``session start + (timestamp -
  recorded session start)``;
- any other call is ready ``delay + tool_wait_ms`` after the *last* of its dependencies
  completed.

Pure and clock-free: the driver passes completion times in and schedules what comes out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from pythia_server.replay.arrivals import session_starts_ms
from pythia_server.replay.workload import WorkloadRequest, session_key

__all__ = ["DependencyTracker", "ReadyCall"]


@dataclass(frozen=True, slots=True)
class ReadyCall:
    ready_ms: float
    request: WorkloadRequest


class DependencyTracker:
    """Tracks one replay of ``requests``: which calls are released by each completion."""

    def __init__(self, requests: Sequence[WorkloadRequest]) -> None:
        self._by_id = {r.request_id: r for r in requests}
        self._dependents: dict[str, list[str]] = defaultdict(list)
        self._remaining: dict[str, int] = {}
        self._latest_dependency_ms: dict[str, float] = {}
        self._roots: dict[str, list[WorkloadRequest]] = defaultdict(list)
        self._open_calls: dict[str, int] = defaultdict(int)
        self._completed: set[str] = set()
        for r in requests:
            self._open_calls[session_key(r)] += 1
            if r.is_root:
                self._roots[session_key(r)].append(r)
            self._remaining[r.request_id] = len(r.wait_for)
            for dependency in r.wait_for:
                self._dependents[dependency].append(r.request_id)
        self._recorded_start_ms = session_starts_ms(requests)

    def session_order(self) -> list[str]:
        """Session keys by recorded start (the order a closed loop admits them)."""
        return list(self._recorded_start_ms)

    def initial(self) -> list[ReadyCall]:
        """Every root at its recorded timestamp (open-loop replay), earliest first."""
        ready = [
            ReadyCall(r.timestamp_ms or 0.0, r)
            for roots in self._roots.values()
            for r in roots
        ]
        return sorted(ready, key=lambda c: c.ready_ms)

    def start_session(self, key: str, start_ms: float) -> list[ReadyCall]:
        """The roots of session ``key`` when the driver starts it at ``start_ms``."""
        if key not in self._recorded_start_ms:
            raise KeyError(f"unknown session {key!r}")
        origin = self._recorded_start_ms[key]
        return sorted(
            (
                ReadyCall(start_ms + (r.timestamp_ms or 0.0) - origin, r)
                for r in self._roots[key]
            ),
            key=lambda c: c.ready_ms,
        )

    def complete(self, request_id: str, now_ms: float) -> list[ReadyCall]:
        """Record that ``request_id`` finished at ``now_ms``; return the calls it releases."""
        if request_id not in self._by_id:
            raise KeyError(f"unknown request {request_id!r}")
        if request_id in self._completed:
            raise ValueError(f"request {request_id!r} completed twice")
        self._completed.add(request_id)
        self._open_calls[session_key(self._by_id[request_id])] -= 1
        released: list[ReadyCall] = []
        for dependent in self._dependents.get(request_id, ()):
            latest = max(self._latest_dependency_ms.get(dependent, now_ms), now_ms)
            self._latest_dependency_ms[dependent] = latest
            self._remaining[dependent] -= 1
            if self._remaining[dependent] == 0:
                call = self._by_id[dependent]
                released.append(ReadyCall(latest + call.dependency_delay_ms, call))
        return released

    def session_finished(self, key: str) -> bool:
        """True once every call of session ``key`` has completed (closed loop's signal)."""
        return self._open_calls.get(key, 0) == 0

    @property
    def done(self) -> bool:
        return len(self._completed) == len(self._by_id)
