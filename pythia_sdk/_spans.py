"""OpenTelemetry plumbing: one tracer and two GenAI histograms, built once per
:func:`pythia_sdk.instrument`, and the exporter that sends spans to the gateway.

Unless a ``tracer_provider`` is passed, Pythia keeps a private provider (it never
replaces the global one): spans still join the caller's traces through the context, and
go to the OTLP endpoint from :mod:`pythia_sdk._config` (by default the gateway the openai
client talks to, learnt from its first call).
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from pythia_sdk import _semconv as sc
from pythia_sdk._config import GATEWAY_ENDPOINT, Settings, gateway_traces_url
from pythia_sdk._deferred import DeferredSpans, supports_deferral

log = logging.getLogger("pythia_sdk")

_DURATION_BUCKETS_S = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24,
                       20.48, 40.96, 81.92)
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)


class GatewayExporter:
    """A span exporter whose endpoint is learnt from the first instrumented call.

    Spans finished before any call knows the gateway are dropped (logged at debug).
    """

    def __init__(self) -> None:
        self._endpoint: str | None = None
        self._inner: Any = None
        self._lock = threading.Lock()
        self._failed = False

    @property
    def endpoint(self) -> str | None:
        return self._endpoint

    def learn(self, base_url: object) -> None:
        if self._endpoint is None:
            with self._lock:
                if self._endpoint is None:
                    self._endpoint = gateway_traces_url(str(base_url))

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        inner = self._get_inner()
        if inner is None:
            log.debug("pythia: %d spans dropped (no traces endpoint known)", len(spans))
            return SpanExportResult.SUCCESS
        return inner.export(spans)

    def _get_inner(self) -> Any:
        if self._inner is None and self._endpoint is not None and not self._failed:
            self._inner = make_otlp_exporter(self._endpoint)
            self._failed = self._inner is None
        return self._inner

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        if self._inner is not None:
            self._inner.shutdown()


def make_otlp_exporter(endpoint: str) -> Any:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        log.warning(
            "pythia: spans not exported: install opentelemetry-exporter-otlp-proto-http "
            "(pip install opentelemetry-exporter-otlp-proto-http)"
        )
        return None
    return OTLPSpanExporter(endpoint=endpoint)


class Telemetry:
    """The tracer, histograms and settings every wrapper reads (built once)."""

    def __init__(
        self,
        settings: Settings,
        tracer_provider: Any = None,
        meter_provider: Any = None,
    ) -> None:
        self.settings = settings
        self.gateway: GatewayExporter | None = None
        self._owned_provider: Any = None
        if tracer_provider is None and settings.export_traces:
            tracer_provider = self._make_provider(settings)
        if tracer_provider is None:
            self.tracer: trace.Tracer = trace.NoOpTracer()
        else:
            self.tracer = tracer_provider.get_tracer(sc.SCOPE_NAME)
        #: False when spans would be no-ops: the hot path then skips building them.
        self.tracing = not isinstance(self.tracer, trace.NoOpTracer)
        self._provider = tracer_provider
        #: Model-call spans built off the call path (see pythia_sdk._deferred), or None.
        self.deferred: DeferredSpans | None = None
        if self.tracing and not settings.capture_content and supports_deferral(self.tracer):
            self.deferred = DeferredSpans(self.tracer)
        meter = (meter_provider or metrics.get_meter_provider()).get_meter(sc.SCOPE_NAME)
        self.duration_s = meter.create_histogram(
            sc.METRIC_OPERATION_DURATION, unit="s", description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS_S,
        )
        self.token_usage = meter.create_histogram(
            sc.METRIC_TOKEN_USAGE, unit="{token}", description="Tokens used per call.",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )

    def metrics_live(self) -> bool:
        """False while the histograms record nowhere (no meter provider: the API's proxy
        with none set yet, or a no-op one); re-read per call, a provider may come later."""
        histogram = self.duration_s
        real = getattr(histogram, "_real_instrument", histogram)  # the API's proxy
        return real is not None and not isinstance(real, metrics.NoOpHistogram)

    def _make_provider(self, settings: Settings) -> Any:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        if settings.traces_endpoint == GATEWAY_ENDPOINT:
            self.gateway = GatewayExporter()
            exporter: Any = self.gateway
        else:
            exporter = make_otlp_exporter(settings.traces_endpoint)
            if exporter is None:
                return None
        resource = Resource.create({"service.name": "pythia-sdk"})
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        self._owned_provider = provider
        return provider

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Build the deferred spans, then export everything the provider holds."""
        if self.deferred is not None:
            self.deferred.drain()
        force_flush = getattr(self._provider, "force_flush", None)
        if force_flush is None:
            return True
        return bool(force_flush(int(timeout_s * 1000)))

    def shutdown(self) -> None:
        if self.deferred is not None:
            self.deferred.close()
        if self._owned_provider is not None:
            self._owned_provider.shutdown()
            self._owned_provider = None


def start_span(
    telemetry: Telemetry,
    name: str,
    attributes: Mapping[str, Any],
    parent: Span | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Span:
    """A started span under ``parent`` (or the current span when None); never attached."""
    context = trace.set_span_in_context(parent) if parent is not None else None
    return telemetry.tracer.start_span(name, context=context, kind=kind, attributes=attributes)


def end_span(span: Span, error: BaseException | None = None) -> None:
    if error is not None:
        record_error(span, error)
    span.end()


def record_error(span: Span, error: BaseException, timestamp_ns: int | None = None) -> None:
    if span.is_recording():
        span.set_attribute(sc.ERROR_TYPE, type(error).__qualname__)
        span.record_exception(error, timestamp=timestamp_ns)
        span.set_status(Status(StatusCode.ERROR, str(error)[:200]))


def traceparent(span: Span) -> str | None:
    """W3C ``traceparent`` for ``span`` (None when it carries no valid context)."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def current_span_reader() -> Callable[[], Span]:
    """``trace.get_current_span`` for the call path: with the SDK's default contextvars
    runtime context, one contextvar read and one dict lookup (the public function goes
    through four calls in three modules); anything else, the public function."""
    try:
        from opentelemetry.context import _RUNTIME_CONTEXT
        from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
        from opentelemetry.trace.propagation import _SPAN_KEY
    except ImportError:  # pragma: no cover - another opentelemetry-api layout
        return trace.get_current_span
    if type(_RUNTIME_CONTEXT) is not ContextVarsRuntimeContext:
        return trace.get_current_span
    var = getattr(_RUNTIME_CONTEXT, "_current_context", None)
    if not isinstance(var, contextvars.ContextVar):  # pragma: no cover - changed internals
        return trace.get_current_span
    invalid, span_type, get_current_span = trace.INVALID_SPAN, Span, trace.get_current_span

    def current() -> Span:
        span = var.get().get(_SPAN_KEY)
        if span is None:
            return invalid
        return span if isinstance(span, span_type) else get_current_span()

    return current
