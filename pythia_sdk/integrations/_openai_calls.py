"""What an openai call returned: one :class:`ModelCall` per request, ended when the
response is read or its stream ends (exhausted, error, ``close``, ``break`` or collection).

Split from :mod:`pythia_sdk.integrations.openai` (the chokepoint) so each stays small.
"""

from __future__ import annotations

import json
import logging
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from opentelemetry.trace import Span, SpanKind

from pythia_sdk import _semconv as sc
from pythia_sdk._deferred import DeferredSpans
from pythia_sdk._spans import Telemetry, record_error

log = logging.getLogger("pythia_sdk")
_MAX_CONTENT_CHARS = 16_384
_failures_logged: set[str] = set()


def log_failure(where: str, exc: BaseException) -> None:
    """Instrumentation faults are logged (once per place) and never reach the caller."""
    if where not in _failures_logged:
        _failures_logged.add(where)
        log.warning("pythia: instrumentation error in %s (the call goes on): %r", where, exc)



class ModelCall:
    """One instrumented model call: its span (eager, deferred or none) and what the
    response said. Deferred, this object *is* the record the worker turns into a span.

    What the call path sets lives in slots, every one set in ``__init__`` (an instance
    dict growing key by key costs microseconds there); what the response says is set
    later, mostly by the worker, and reads the class defaults until then.
    """

    __slots__ = ("telemetry", "op", "api", "body", "request", "start_ns", "span", "ended",
                 "deferred", "deferred_span", "outgoing", "__dict__", "__weakref__")

    end_ns = 0
    #: Deferred: the parsed response, read by the worker (not on the call path).
    result: Any = None
    usage: Any = None
    response_model: str | None = None
    response_id: str | None = None
    finish_reasons: tuple[str, ...] = ()
    raw_response = False  # with_streaming_response: the body is the caller's
    how: str | None = None
    error: BaseException | None = None

    def __init__(self, telemetry: Telemetry, op_api: tuple[str, str], body: Mapping[str, Any],
                 request: tuple[Any, ...]) -> None:
        self.telemetry = telemetry
        self.op, self.api = op_api
        #: The request body openai built for this call (its own dict, not the caller's).
        self.body = body
        #: (tag attributes, streamed, base URL): with the body, the span's request
        #: attributes, built only when the span is.
        self.request = request
        self.start_ns = time.time_ns()
        self.span: Span | None = None  # an eager span
        self.ended = False
        self.deferred = False  # True: the worker builds the span and records the metrics
        #: Deferred and sampled: (trace id, span id, trace flags, the parent's SpanContext
        #: or None for a root), the span the call path announced in ``traceparent``.
        self.deferred_span: tuple[int, int, int, Any] | None = None
        #: Headers added to the built request (see _openai_headers), or None.
        self.outgoing: tuple[tuple[bytes, bytes, bytes], ...] | None = None

    @property
    def model(self) -> str | None:
        model = self.body.get("model")
        return model if isinstance(model, str) else None

    def request_attributes(self) -> dict[str, Any]:
        tag_attrs, streamed, base_url = self.request
        body = self.body
        attrs: dict[str, Any] = dict(tag_attrs)
        attrs[sc.GEN_AI_OPERATION_NAME] = self.op
        attrs[sc.GEN_AI_PROVIDER_NAME] = "openai"
        attrs[sc.PYTHIA_API] = self.api
        model = self.model
        if model:
            attrs[sc.GEN_AI_REQUEST_MODEL] = model
        if streamed or body.get("stream") is True:
            attrs[sc.PYTHIA_STREAM] = True
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") \
            or body.get("max_output_tokens")
        if isinstance(max_tokens, int):
            attrs[sc.GEN_AI_REQUEST_MAX_TOKENS] = max_tokens
        attrs[sc.SERVER_ADDRESS] = base_url.host
        if base_url.port:
            attrs[sc.SERVER_PORT] = base_url.port
        return attrs

    def add_finish_reason(self, reason: Any) -> None:
        self.finish_reasons = (*self.finish_reasons, str(reason))

    # -- reading responses -------------------------------------------------------------
    def on_item(self, item: Any) -> None:
        """One stream chunk or event; cheap, called per chunk."""
        usage = getattr(item, "usage", None)
        if usage is not None:
            self.usage = usage
        if self.response_model is None:
            self.response_model = getattr(item, "model", None)
            self.response_id = getattr(item, "id", None)
        choices = getattr(item, "choices", None)
        if choices:
            reason = getattr(choices[0], "finish_reason", None)
            if reason:
                self.add_finish_reason(reason)
        elif getattr(item, "type", None) == "response.completed":
            self.on_response(item.response)

    def on_response(self, response: Any) -> None:
        self.usage = getattr(response, "usage", None)
        self.response_model = getattr(response, "model", None)
        self.response_id = getattr(response, "id", None)
        for choice in getattr(response, "choices", None) or ():
            reason = getattr(choice, "finish_reason", None)
            if reason:
                self.add_finish_reason(reason)
        if self.span is not None and self.telemetry.settings.capture_content:
            _capture_output(self.span, response)

    # -- ending --------------------------------------------------------------------------
    def end(self, how: str | None = None, error: BaseException | None = None) -> None:
        """Note the end; the span and metrics are built now, or by the worker."""
        if self.ended:
            return
        self.ended = True
        self.end_ns = time.time_ns()
        if how is not None:
            self.how = how
        if error is not None:
            self.error = error
        if self.deferred:
            deferred = self.telemetry.deferred
            if deferred is not None:
                deferred.submit(self)
                return
        try:
            self._finish()
        except Exception as exc:  # pragma: no cover - defensive
            log_failure("span end", exc)

    def materialise(self, spans: DeferredSpans) -> None:
        """The deferred span (with the recorded ids, times and parent) and metric points."""
        if self.result is not None:
            self.on_response(self.result)
            self.result = None
        if self.deferred_span is not None:
            trace_id, span_id, flags, parent = self.deferred_span
            model = self.model
            name = f"{self.op} {model}" if model else self.op
            attrs = self.request_attributes()
            attrs.update(self._response_attributes())
            if self.error is None:
                spans.emit(trace_id, span_id, flags, parent,
                           name, attrs, self.start_ns, self.end_ns)
            else:  # the exception event and status: through a live span
                span = spans.start_span(trace_id, span_id, parent, name,
                                        kind=SpanKind.CLIENT, attributes=attrs,
                                        start_time=self.start_ns)
                record_error(span, self.error, timestamp_ns=self.end_ns)
                span.end(end_time=self.end_ns)
        self._record_metrics()

    def _response_attributes(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        if self.how is not None:
            attrs[sc.PYTHIA_STREAM_END] = self.how
        if self.raw_response:
            attrs[sc.PYTHIA_RAW_RESPONSE] = True
        if self.response_model:
            attrs[sc.GEN_AI_RESPONSE_MODEL] = str(self.response_model)
        if self.response_id:
            attrs[sc.GEN_AI_RESPONSE_ID] = str(self.response_id)
        if self.finish_reasons:
            attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] = self.finish_reasons
        input_tokens, output_tokens = _usage_tokens(self.usage)
        if input_tokens is not None:
            attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] = input_tokens
        if output_tokens is not None:
            attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = output_tokens
        return attrs

    def _finish(self) -> None:
        span = self.span
        if span is not None:
            attrs = self._response_attributes()
            if attrs:
                span.set_attributes(attrs)
            if self.error is not None:
                record_error(span, self.error)
            span.end()
        self._record_metrics()

    def _record_metrics(self) -> None:
        tel = self.telemetry
        error_type = type(self.error).__qualname__ if self.error is not None else None
        plain, inputs, outputs = _metric_attributes(self.op, self.model, error_type)
        tel.duration_s.record((self.end_ns - self.start_ns) / 1e9, plain)
        input_tokens, output_tokens = _usage_tokens(self.usage)
        if input_tokens is not None:
            tel.token_usage.record(input_tokens, inputs)
        if output_tokens is not None:
            tel.token_usage.record(output_tokens, outputs)


_MetricAttributes = tuple[dict[str, Any], dict[str, Any], dict[str, Any]]
_metric_attrs: dict[tuple[str, str | None, str | None], _MetricAttributes] = {}


def _metric_attributes(op: str, model: str | None, error_type: str | None) -> _MetricAttributes:
    """The three attribute sets of one call's metric points, built once per kind of call
    (the SDK copies what it keeps, so sharing them is safe)."""
    key = (op, model, error_type)
    found = _metric_attrs.get(key)
    if found is None:
        plain: dict[str, Any] = {sc.GEN_AI_OPERATION_NAME: op, sc.GEN_AI_PROVIDER_NAME: "openai"}
        if model:
            plain[sc.GEN_AI_REQUEST_MODEL] = model
        if error_type is not None:
            plain[sc.ERROR_TYPE] = error_type
        found = (plain, {**plain, sc.GEN_AI_TOKEN_TYPE: "input"},
                 {**plain, sc.GEN_AI_TOKEN_TYPE: "output"})
        if len(_metric_attrs) >= 1024:  # many models or error types: start over
            _metric_attrs.clear()
        _metric_attrs[key] = found
    return found


def _usage_tokens(usage: Any) -> tuple[int | None, int | None]:
    if usage is None:
        return None, None
    inp = getattr(usage, "prompt_tokens", None)
    if inp is None:
        inp = getattr(usage, "input_tokens", None)
    out = getattr(usage, "completion_tokens", None)
    if out is None:
        out = getattr(usage, "output_tokens", None)
    return (inp if isinstance(inp, int) else None, out if isinstance(out, int) else None)


def capture_input(span: Span, body: Mapping[str, Any]) -> None:
    content = body.get("messages") or body.get("input") or body.get("prompt")
    if content is not None:
        span.set_attribute(sc.GEN_AI_INPUT_MESSAGES, _dump(content))


def _capture_output(span: Span, response: Any) -> None:
    choices = getattr(response, "choices", None)
    if choices:
        out: list[Any] = [getattr(c, "message", None) or getattr(c, "text", None) for c in choices]
        span.set_attribute(sc.GEN_AI_OUTPUT_MESSAGES, _dump(
            [o.model_dump() if hasattr(o, "model_dump") else o for o in out]))


def _dump(value: Any) -> str:
    return json.dumps(value, default=str)[:_MAX_CONTENT_CHARS]


def observe_sync(stream: Any, call: ModelCall) -> None:
    """Route the stream's items through ``call``; end it on every way a stream can end."""
    stream._iterator = _iterate(stream._iterator, call)
    original_close = stream.close

    def close() -> None:
        call.end("closed")
        original_close()

    stream.close = close
    weakref.finalize(stream, call.end, "collected")


def _iterate(iterator: Iterator[Any], call: ModelCall) -> Iterator[Any]:
    try:
        for item in iterator:
            call.on_item(item)
            yield item
    except GeneratorExit:
        call.end("closed")
        raise
    except BaseException as exc:
        call.end("error", exc)
        raise
    call.end("exhausted")


def observe_async(stream: Any, call: ModelCall) -> None:
    stream._iterator = _aiterate(stream._iterator, call)
    original_close = stream.close

    async def close() -> None:
        call.end("closed")
        await original_close()

    stream.close = close
    weakref.finalize(stream, call.end, "collected")


async def _aiterate(iterator: AsyncIterator[Any], call: ModelCall) -> AsyncIterator[Any]:
    try:
        async for item in iterator:
            call.on_item(item)
            yield item
    except GeneratorExit:
        call.end("closed")
        raise
    except BaseException as exc:
        call.end("error", exc)
        raise
    call.end("exhausted")
