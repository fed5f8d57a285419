"""The wall-clock driver: runs the engine core inside asyncio, optionally sped up.

Engine time runs ``speedup`` times faster than the wall clock. When there is work the
driver runs steps back to back in engine time: each step starts where the previous one
ended and is delivered ``duration_s / speedup`` wall seconds after it (a deadline, so
Python's own time and the event loop's lateness are absorbed rather than added to
simulated time). When idle it waits for a submission and resumes at the wall clock. If
the Python work cannot keep up, the simulation falls behind the wall clock (delivery is
late, simulated durations stay exact), never ahead of it; beyond ``max_lag_s`` wall
seconds behind it gives up and resyncs to the wall clock. Tokens reach each request's
``RequestStream`` at the end of the step that produced them, as SGLang's detokenizer
delivers them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from pythia_server.aio import cancel_and_wait
from pythia_server.engine.core import Engine
from pythia_server.engine.types import (
    EngineLoad,
    FinishedRequest,
    GenerateRequest,
    StepResult,
    TokenDelta,
)

__all__ = ["LiveEngine", "RequestStream", "StreamEvent"]


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """What one step did for one request: a token, the end, or both at once."""

    delta: TokenDelta | None
    finished: FinishedRequest | None


class RequestStream:
    """Events of one request as they are produced; ``finished`` is set at the end."""

    def __init__(self, rid: str) -> None:
        self.rid = rid
        self.finished: FinishedRequest | None = None
        self._queue: asyncio.Queue[StreamEvent] = asyncio.Queue()

    def _put(self, event: StreamEvent) -> None:
        self._queue.put_nowait(event)

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        while self.finished is None:
            event = await self._queue.get()
            if event.finished is not None:
                self.finished = event.finished
            yield event

    async def result(self) -> FinishedRequest:
        """Wait for the end, discarding intermediate tokens."""
        async for _ in self:
            pass
        assert self.finished is not None
        return self.finished


class LiveEngine:
    def __init__(
        self,
        engine: Engine,
        speedup: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        on_step: Callable[[StepResult], None] | None = None,
        max_lag_s: float = 1.0,
    ) -> None:
        """``max_lag_s``: wall seconds the back-to-back engine may trail the clock before resyncing."""
        if speedup <= 0:
            raise ValueError("speedup must be positive")
        if max_lag_s < 0:
            raise ValueError("max_lag_s must not be negative")
        self.engine = engine
        self.speedup = speedup
        self.max_lag_s = max_lag_s
        self._clock = clock
        self._on_step = on_step
        self._wall_origin = clock()
        self._engine_s = 0.0  # engine time at the end of the last step
        self._busy = False  # stepping back to back: the next step starts at _engine_s
        self._woken_s: float | None = None  # engine time of the submission that woke an idle loop
        self._streams: dict[str, RequestStream] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.steps = 0
        self.resyncs = 0  # times the engine fell more than max_lag_s behind and jumped to the clock
        self.max_lag_seen_s = 0.0  # wall seconds the engine trailed the clock at a step start, at worst

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="pythia-sim-engine")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        for rid in list(self._streams):
            self.abort(rid)

    # ------------------------------------------------------------------ requests
    @property
    def now_s(self) -> float:
        """Engine time. While stepping back to back: the end of the step under way (a request
        arriving now is seen when that step ends, as SGLang's loop sees it); when idle: wall
        time times speedup (never before the last step's end)."""
        if self._busy:
            return self._engine_s
        return max(self._engine_s, self._wall_s())

    def _wall_s(self) -> float:
        return (self._clock() - self._wall_origin) * self.speedup

    def submit(self, request: GenerateRequest) -> RequestStream:
        """Queue ``request``; raises EngineError when the engine refuses it."""
        now_s = self.now_s
        self.engine.submit(request, now_s)
        if not self._busy and self._woken_s is None:
            self._woken_s = now_s  # SGLang's idle loop polls: it would start this step now
        stream = RequestStream(request.rid)
        self._streams[request.rid] = stream
        self._wake.set()
        return stream

    def abort(self, rid: str) -> bool:
        finished = self.engine.abort(rid, self.now_s)
        stream = self._streams.pop(rid, None)
        if stream is not None and finished is not None:
            stream._put(StreamEvent(None, finished))
        return finished is not None

    def set_priority(self, rid: str, priority: int | None) -> bool:
        """Re-prioritise a queued request (``Engine.set_priority``); False if not waiting."""
        changed = self.engine.set_priority(rid, priority, self.now_s)
        if changed:
            self._wake.set()
        return changed

    def active_rids(self) -> list[str]:
        """Requests with an open stream (queued or running)."""
        return list(self._streams)

    def close_session(self, session_id: str) -> bool:
        return self.engine.close_session(session_id)

    def flush_cache(self) -> bool:
        return self.engine.flush_cache()

    def load(self) -> EngineLoad:
        return self.engine.load()

    # ------------------------------------------------------------------ loop
    async def _run(self) -> None:
        while True:
            if not self.engine.has_work:
                self._busy = False
                self._wake.clear()
                await self._wake.wait()
                continue
            start_s = self._next_start_s()
            result = self.engine.step(start_s)
            if result is None:  # work that cannot be scheduled until something changes
                self._busy = False
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=0.05)
                continue
            self.steps += 1
            self._engine_s = result.end_s
            self._busy = True
            delay = self._wall_origin + result.end_s / self.speedup - self._clock()
            await asyncio.sleep(max(delay, 0.0))
            self._deliver(result)

    def _next_start_s(self) -> float:
        """Back to back: the last step's end; woken from idle: when the request came; else
        (or too far behind) the wall clock. The loop's own wake-up latency is not engine time."""
        wall_s = self._wall_s()
        woken_s, self._woken_s = self._woken_s, None
        if not self._busy:
            if woken_s is None or (wall_s - woken_s) / self.speedup > self.max_lag_s:
                return max(self._engine_s, wall_s)
            return max(self._engine_s, woken_s)
        lag_s = (wall_s - self._engine_s) / self.speedup
        if lag_s > self.max_lag_s:
            self.resyncs += 1
            return wall_s
        self.max_lag_seen_s = max(self.max_lag_seen_s, lag_s)
        return self._engine_s

    def _deliver(self, result: StepResult) -> None:
        finished = {f.rid: f for f in result.finished}
        for delta in result.deltas:
            stream = self._streams.get(delta.rid)
            if stream is not None:
                end = finished.pop(delta.rid, None)
                stream._put(StreamEvent(delta, end))
                if end is not None:
                    del self._streams[delta.rid]
        for rid, end in finished.items():
            stream = self._streams.pop(rid, None)
            if stream is not None:
                stream._put(StreamEvent(None, end))
        if self._on_step is not None:
            self._on_step(result)
