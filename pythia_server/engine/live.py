"""The wall-clock driver: runs the engine core inside asyncio, optionally sped up.

Engine time runs ``speedup`` times faster than the wall clock. When there is work the
driver runs steps back to back, each one ending ``duration_s / speedup`` wall seconds
after it began (measured against a deadline, so Python's own time is absorbed rather
than added); when idle it waits for a submission. Tokens reach each request's
``RequestStream`` at the end of the step that produced them, as SGLang's detokenizer
delivers them. A step that takes longer to compute than its simulated duration makes
the simulation fall behind the wall clock, never run ahead of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

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
    ) -> None:
        if speedup <= 0:
            raise ValueError("speedup must be positive")
        self.engine = engine
        self.speedup = speedup
        self._clock = clock
        self._on_step = on_step
        self._wall_origin = clock()
        self._engine_s = 0.0  # engine time at the end of the last step
        self._streams: dict[str, RequestStream] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.steps = 0

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="pythia-sim-engine")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for rid in list(self._streams):
            self.abort(rid)

    # ------------------------------------------------------------------ requests
    @property
    def now_s(self) -> float:
        """Engine time: never behind the last step's end, else wall time times speedup."""
        return max(self._engine_s, (self._clock() - self._wall_origin) * self.speedup)

    def submit(self, request: GenerateRequest) -> RequestStream:
        """Queue ``request``; raises EngineError when the engine refuses it."""
        self.engine.submit(request, self.now_s)
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
                self._wake.clear()
                await self._wake.wait()
                continue
            start_s = self.now_s
            result = self.engine.step(start_s)
            if result is None:  # work that cannot be scheduled until something changes
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=0.05)
                continue
            self.steps += 1
            self._engine_s = result.end_s
            delay = self._wall_origin + result.end_s / self.speedup - self._clock()
            await asyncio.sleep(max(delay, 0.0))
            self._deliver(result)

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
