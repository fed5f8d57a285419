"""The gateway's profiler feed: every finished call taught to the WorkflowProfiler, off the request path.

The proxy hands each :class:`CallRecord` to :meth:`ProfilerFeed.on_call` (a call
listener); that only appends to a bounded queue. A background task drains the queue
every ``tick_s`` on the event loop (so predictions, read on the same loop, need no
lock), in small batches that yield to requests between them, ends sessions whose root
workflow span closed (:meth:`end_session`) or that were idle for
``session_idle_timeout_s``, samples the accuracy history for the report (every
``profiler_history_interval_s`` and whenever a type changes mode) and updates the
per-workflow mode gauges. Learning never fails a request: an exception is logged and
counted (``pythia_profiler_calls_total{outcome="failed"}``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from pythia_server.aio import cancel_and_wait
from pythia_server.config import GatewayConfig
from pythia_server.gateway.metrics import GatewayMetrics
from pythia_server.profiler.profiler import WorkflowProfiler
from pythia_server.profiler.types import ProfilerSnapshot
from pythia_server.reports.profiler_view import AccuracyHistory
from pythia_server.reports.relearn import call_observation, learnable
from pythia_server.store.records import CallRecord

__all__ = ["ProfilerFeed"]

log = logging.getLogger(__name__)

#: Items handled per slice of the event loop before yielding to requests.
_BATCH = 256


class ProfilerFeed:
    """One gateway's profiler, its accuracy history and what feeds them."""

    def __init__(self, config: GatewayConfig, metrics: GatewayMetrics, *,
                 clock: Callable[[], float] = time.time, tick_s: float = 0.1,
                 max_pending: int = 100_000) -> None:
        self.profiler = WorkflowProfiler(config.profiler_config())
        self.history = AccuracyHistory(min_interval_s=config.profiler_history_interval_s)
        self._metrics = metrics
        self._clock = clock
        self._tick_s = tick_s
        self._idle_timeout_s = config.session_idle_timeout_s
        self._history_interval_s = config.profiler_history_interval_s
        self._max_pending = max_pending
        self._pending: deque[tuple[str, Any]] = deque()
        #: (workflow, session) -> end of its latest call, least recently active first.
        self._last_call: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._next_history_s = 0.0
        self._modes: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self.failures = 0
        self.dropped = 0

    # -- the hot path: enqueue only ------------------------------------------------------

    def on_call(self, record: CallRecord) -> None:
        """Call listener: queue a finished, attributable call for learning."""
        if not learnable(record):
            return
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            self._metrics.profiler_calls.labels("dropped").inc()
            return
        self._pending.append(("call", record))

    def end_session(self, workflow: str | None, session: str | None, now_s: float, reason: str = "span") -> None:
        """A session ended (its root workflow span closed); ``workflow=None``: that id in every type."""
        if not session:
            return
        if len(self._pending) >= self._max_pending:
            self.dropped += 1  # the session stays live until the idle timeout ends it
            return
        self._pending.append(("end", (workflow, session, now_s, reason)))

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="pythia-profiler-feed")

    async def stop(self) -> None:
        """Stop the task and learn what is still queued (a final report sees every call)."""
        await cancel_and_wait(self._task)
        self._task = None
        self.drain()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            while self._pending:
                self._process(_BATCH)
                await asyncio.sleep(0)  # let requests through between slices
            self._housekeeping(self._clock())

    # -- learning --------------------------------------------------------------------------

    def drain(self) -> None:
        """Learn everything queued now (the API calls this before reading the profiler)."""
        while self._pending:
            self._process(_BATCH)
        self._housekeeping(self._clock())

    def snapshot(self) -> ProfilerSnapshot:
        """The profiler's current view, after everything queued so far is learned."""
        self.drain()
        return self.profiler.snapshot()

    def _process(self, limit: int) -> None:
        for _ in range(min(limit, len(self._pending))):
            kind, item = self._pending.popleft()
            try:
                if kind == "call":
                    self._observe(item)
                else:
                    self._end(*item)
            except Exception:  # learning must never take the gateway down
                self.failures += 1
                self._metrics.profiler_calls.labels("failed").inc()
                log.exception("profiler failed on a %s item", kind)

    def _observe(self, record: CallRecord) -> None:
        self.profiler.observe(call_observation(record))
        self._metrics.profiler_calls.labels("observed").inc()
        key = (record.workflow or "", record.session or "")
        self._last_call[key] = max(record.finished_at, self._last_call.get(key, 0.0))
        self._last_call.move_to_end(key)
        while len(self._last_call) > self.profiler.config.max_live_sessions:
            self._last_call.popitem(last=False)  # the profiler evicts (and learns) it too

    def _end(self, workflow: str | None, session: str, now_s: float, reason: str) -> None:
        keys = ([(workflow, session)] if workflow else
                [key for key in self._last_call if key[1] == session])
        for wf, sess in keys:
            if self._last_call.pop((wf, sess), None) is None:
                continue  # unknown or already ended: nothing to learn
            self.profiler.end_session(wf, sess, now_s)
            self._metrics.profiler_sessions_ended.labels(reason).inc()
            mode = self.profiler.mode(wf)
            if self._modes.get(wf, mode) != mode:
                self.record_history(now_s)  # a promotion or demotion is a point of its own
            if wf in self._modes or len(self._modes) < self.profiler.config.max_workflows:
                self._modes[wf] = mode
            self._metrics.set_workflow_standing(wf, mode)

    def _housekeeping(self, now_s: float) -> None:
        """End idle sessions; sample accuracy into the history every ``history_interval_s``."""
        try:
            cutoff = now_s - self._idle_timeout_s
            while self._last_call:
                (wf, sess), last_s = next(iter(self._last_call.items()))
                if last_s > cutoff:
                    break
                self._end(wf, sess, now_s, "idle")
            self._metrics.profiler_live_sessions.set(self.profiler.live_sessions)
            if now_s >= self._next_history_s:
                self._next_history_s = now_s + self._history_interval_s
                self.record_history(now_s)
        except Exception:
            self.failures += 1
            log.exception("profiler housekeeping failed")

    def record_history(self, now_s: float) -> ProfilerSnapshot:
        """One accuracy point per workflow type (kept when it changed or the interval passed)."""
        snapshot = self.profiler.snapshot()
        self.history.record(snapshot, now_s)
        for wf in snapshot.workflows:
            self._metrics.set_workflow_standing(wf.workflow, wf.mode.mode, wf.mode.next_agent_top1,
                                                wf.mode.bound_coverage)
        return snapshot
