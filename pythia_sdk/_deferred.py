"""Model-call spans and metric points built off the call path.

Why: the OpenTelemetry SDK's span machinery (sampler, bounded attributes, locks, the
processors' ``on_start``/``on_end``) and three histogram records cost about 100 us per
call on the calling thread, several times Pythia's budget. The call path only needs the
span's *identity* (for ``traceparent``), so it takes a trace id and a span id from the
provider's own id generator, notes the start and end time, the parent context, the tags
and the usage in the :class:`~pythia_sdk.integrations._openai_calls.ModelCall` it already
keeps, and appends that record to a queue. A worker thread turns each record into a real
SDK span (through the same tracer, so every span processor sees ``on_start`` and
``on_end`` as usual) with the recorded timestamps, parent and attributes, and records the
metric points.

When: only where this changes nothing a user could observe but timing, that is when the
provider is the SDK's, samples with the default ``ParentBased(ALWAYS_ON)`` (so the sampled
flag in ``traceparent`` is known without asking it), and every span processor is a
``BatchSpanProcessor`` (export is asynchronous anyway). With a ``SimpleSpanProcessor``
(tests, debugging), another sampler or content capture, spans are built inline as before.

The trade-off is the batch exporter's: records wait up to :data:`INTERVAL_S` in memory, so
a process killed hard loses them. ``pythia.flush()``, ``pythia.uninstrument()`` and normal
interpreter exit drain the queue first (the exit hook runs before the provider's own).
"""

from __future__ import annotations

import atexit
import copy
import logging
import os
import threading
import weakref
from collections import deque
from typing import Any

from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

log = logging.getLogger("pythia_sdk")

#: How long a record may wait before the worker builds its span (seconds).
INTERVAL_S = 0.5
#: Queue length that wakes the worker early (bounds memory under load).
WAKE_AT = 512
#: Span ids made ahead per wake (a quarter as many trace ids, for root spans).
POOL_SIZE = 1024

_DEFAULT_SAMPLERS: frozenset[str] = frozenset()


def _default_sampler_descriptions() -> frozenset[str]:
    global _DEFAULT_SAMPLERS
    if not _DEFAULT_SAMPLERS:
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

        _DEFAULT_SAMPLERS = frozenset(
            {ALWAYS_ON.get_description(), ParentBased(ALWAYS_ON).get_description()})
    return _DEFAULT_SAMPLERS


def supports_deferral(tracer: Any) -> bool:
    """True for an SDK tracer whose sampling decision is the parent's (or always on)."""
    try:
        from opentelemetry.sdk.trace import Tracer as SdkTracer
    except ImportError:  # pragma: no cover - the SDK is a dependency
        return False
    if not isinstance(tracer, SdkTracer):
        return False
    sampler = getattr(tracer, "sampler", None)
    ids = getattr(tracer, "id_generator", None)
    if sampler is None or ids is None or not hasattr(tracer, "span_processor"):
        return False
    return sampler.get_description() in _default_sampler_descriptions()


def batch_processors_only(tracer: Any) -> bool:
    """True when every span processor of ``tracer`` exports asynchronously in batches."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    processors = getattr(tracer.span_processor, "_span_processors", None)
    return bool(processors) and all(isinstance(p, BatchSpanProcessor) for p in processors)


class _PresetIds:
    """An id generator that returns the ids the call path already sent in ``traceparent``."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.trace_id = 0
        self.span_id = 0

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        return self.span_id

    def is_trace_id_random(self) -> bool:
        return bool(getattr(self.real, "is_trace_id_random", lambda: False)())


class DeferredSpans:
    """The queue of finished model calls and the worker that materialises them."""

    def __init__(self, tracer: Any) -> None:
        from opentelemetry.sdk.trace import ReadableSpan  # the SDK: present, as tracer is

        self._readable_span = ReadableSpan
        #: The call path reads ids from the provider's generator, the worker builds spans
        #: with a copy of the tracer whose generator hands back those same ids.
        self.ids = tracer.id_generator
        self._new_trace_id = self.ids.generate_trace_id
        self._new_span_id = self.ids.generate_span_id
        #: (parent span, its SpanContext or None, "00-{trace id}-", flags, "-{flags}"): the
        #: last parent seen. Calls of one agent share it; one tuple, replaced whole.
        self._last_parent: tuple[Any, ...] = (object(), None, None, 0, "")
        #: Ids made ahead by the worker, with their hex, for the SDK's random generator
        #: only (another generator's ids may depend on the time they are made).
        self._pooled = type(self.ids).__name__ == "RandomIdGenerator" \
            and type(self.ids).__module__.startswith("opentelemetry.sdk.")
        self._span_ids: deque[tuple[int, str]] = deque()
        self._trace_ids: deque[tuple[int, str]] = deque()
        self.root_flags = 0x01 | (0x02 if _PresetIds(self.ids).is_trace_id_random() else 0)
        self._preset = _PresetIds(self.ids)
        self._tracer = copy.copy(tracer)
        self._tracer.id_generator = self._preset
        self._span_processor = tracer.span_processor
        self._scope = getattr(tracer, "_instrumentation_scope", None)
        self._limits = getattr(tracer, "_span_limits", None)
        #: Our few attributes need no bounding unless the user set span limits.
        self._plain_attributes = self._limits is not None \
            and self._limits.max_span_attribute_length is None \
            and (self._limits.max_span_attributes or 0) >= 64
        self._checked: Any = None
        self._batch_only = False
        self._queue: deque[Any] = deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # one drainer at a time (worker or flush)
        self._thread: threading.Thread | None = None
        self._closed = False
        atexit.register(self.close)
        _LIVE.add(self)

    @property
    def active(self) -> bool:
        """Whether the call path should defer now (re-checked when processors change)."""
        processors = getattr(self._span_processor, "_span_processors", None)
        if processors is not self._checked:
            self._checked = processors
            self._batch_only = batch_processors_only(self._tracer)
        return self._batch_only and not self._closed

    def announce(self, call: Any, parent_span: Any) -> str | None:
        """Defer ``call``'s span: give it the ids of a span under ``parent_span`` (a new
        trace when that has no valid context) and return the ``traceparent`` naming it.
        Unsampled (as its parent), the call keeps no ids and no span is built. None when
        spans cannot be deferred now (see :attr:`active`): the caller builds its own."""
        if not self._batch_only or self._closed \
                or self._span_processor._span_processors is not self._checked:
            if not self.active:  # the processors changed, or spans are built inline
                return None
        last = self._last_parent
        if last[0] is not parent_span:  # a new parent: its context read once, not per call
            ctx = parent_span.get_span_context()
            if ctx.is_valid:
                flags = int(ctx.trace_flags) & 0x03
                last = (parent_span, ctx, f"00-{ctx.trace_id:032x}-", flags, f"-{flags:02x}")
            else:
                flags = self.root_flags
                last = (parent_span, None, None, flags, f"-{flags:02x}")
            self._last_parent = last
        _, parent_ctx, prefix, flags, suffix = last
        try:
            span_id, span_hex = self._span_ids.pop()
        except IndexError:
            span_id = self._new_span_id()
            span_hex = f"{span_id:016x}"
        if parent_ctx is None:
            try:
                trace_id, prefix = self._trace_ids.pop()
            except IndexError:
                trace_id = self._new_trace_id()
                prefix = f"00-{trace_id:032x}-"
        else:
            trace_id = parent_ctx.trace_id
        tp = f"{prefix}{span_hex}{suffix}"
        call.deferred = True
        if flags & 0x01:  # sampled (ParentBased: as the parent, or a new root)
            call.deferred_span = (trace_id, span_id, flags, parent_ctx)
        return tp

    def submit(self, record: Any) -> None:
        """Queue a finished call (never blocks; wakes the worker when the queue is long)."""
        queue = self._queue
        queue.append(record)
        if self._thread is None or self._closed:
            self._submitted_idle()
        elif len(queue) >= WAKE_AT and not self._wake.is_set():
            self._wake.set()

    def _submitted_idle(self) -> None:
        if self._closed:  # no worker any more: build what is queued now, in this thread
            self.drain()
        else:
            self._start()

    def drain(self) -> None:
        """Build every queued span now, in this thread."""
        with self._lock:
            queue = self._queue
            while True:
                try:
                    record = queue.popleft()
                except IndexError:
                    return
                self._materialise(record)

    def close(self) -> None:
        """Drain and stop the worker; later records are built inline."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)
        self.drain()
        atexit.unregister(self.close)

    # -- internals --------------------------------------------------------------------------
    def emit(self, trace_id: int, span_id: int, flags: int, parent: Any, name: str,
             attributes: dict[str, Any], start_ns: int, end_ns: int) -> None:
        """A finished CLIENT span straight to the processors (all batch processors, whose
        ``on_start`` does nothing), without the live-span machinery."""
        context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(flags),
                              trace_state=parent.trace_state if parent is not None else None)
        tracer = self._tracer
        span = self._readable_span(
            name, context=context, parent=parent, resource=tracer.resource,
            attributes=attributes if self._plain_attributes else self._bounded(attributes),
            kind=SpanKind.CLIENT, instrumentation_info=tracer.instrumentation_info,
            start_time=start_ns, end_time=end_ns,
            instrumentation_scope=self._scope,
        )
        self._span_processor.on_end(span)

    def start_span(self, trace_id: int, span_id: int, parent: Any, name: str,
                   **kwargs: Any) -> Any:
        """A live SDK span with the given ids, for records that need events (errors). The
        caller holds the drain lock, so no other record can take the preset ids."""
        from opentelemetry import trace
        from opentelemetry.context import Context

        self._preset.trace_id = trace_id
        self._preset.span_id = span_id
        context = Context() if parent is None else \
            trace.set_span_in_context(trace.NonRecordingSpan(parent), Context())
        return self._tracer.start_span(name, context=context, **kwargs)

    def _bounded(self, attributes: dict[str, Any]) -> Any:
        from opentelemetry.attributes import BoundedAttributes

        limits = self._limits
        return BoundedAttributes(limits.max_span_attributes, attributes, immutable=True,
                                 max_value_len=limits.max_span_attribute_length)

    def _materialise(self, record: Any) -> None:
        try:
            record.materialise(self)
        except Exception as exc:  # never let one bad record stop the worker
            log.warning("pythia: could not build a deferred span: %r", exc)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name="pythia-sdk-spans", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            self._refill()
            self._wake.wait(INTERVAL_S)
            self._wake.clear()
            self.drain()

    def _refill(self) -> None:
        """Top up the id pools (the call path pops from them, or makes its own)."""
        if not self._pooled:
            return
        span_ids, trace_ids = self._span_ids, self._trace_ids
        new_span_id, new_trace_id = self._new_span_id, self._new_trace_id
        while len(span_ids) < POOL_SIZE:
            span_id = new_span_id()
            span_ids.appendleft((span_id, f"{span_id:016x}"))
        while len(trace_ids) < POOL_SIZE // 4:
            trace_id = new_trace_id()
            trace_ids.appendleft((trace_id, f"00-{trace_id:032x}-"))

    def _after_fork(self) -> None:
        """A forked child has no worker thread: start a fresh one on its first call. Its
        copies of the parent's pooled ids are dropped (they would be made twice)."""
        self._span_ids.clear()
        self._trace_ids.clear()
        self._thread = None
        self._lock = threading.Lock()
        self._wake = threading.Event()


_LIVE: weakref.WeakSet[DeferredSpans] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for deferred in list(_LIVE):
        deferred._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
