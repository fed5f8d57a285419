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

from opentelemetry.trace import Span

from pythia_sdk import _semconv as sc
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
    """One instrumented model call: its span (maybe none) and what the response said."""

    __slots__ = ("telemetry", "span", "op", "model", "start_ns", "ended", "usage",
                 "response_model", "response_id", "finish_reasons", "__weakref__")

    def __init__(self, telemetry: Telemetry, span: Span | None, op: str, model: str | None):
        self.telemetry = telemetry
        self.span = span
        self.op = op
        self.model = model
        self.start_ns = time.monotonic_ns()
        self.ended = False
        self.usage: Any = None
        self.response_model: str | None = None
        self.response_id: str | None = None
        self.finish_reasons: list[str] = []

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
                self.finish_reasons.append(str(reason))
        elif getattr(item, "type", None) == "response.completed":
            self.on_response(item.response)

    def on_response(self, response: Any) -> None:
        self.usage = getattr(response, "usage", None)
        self.response_model = getattr(response, "model", None)
        self.response_id = getattr(response, "id", None)
        for choice in getattr(response, "choices", None) or ():
            reason = getattr(choice, "finish_reason", None)
            if reason:
                self.finish_reasons.append(str(reason))
        if self.span is not None and self.telemetry.settings.capture_content:
            _capture_output(self.span, response)

    # -- ending --------------------------------------------------------------------------
    def end(self, how: str | None = None, error: BaseException | None = None) -> None:
        if self.ended:
            return
        self.ended = True
        try:
            self._finish(how, error)
        except Exception as exc:  # pragma: no cover - defensive
            log_failure("span end", exc)

    def _finish(self, how: str | None, error: BaseException | None) -> None:
        input_tokens, output_tokens = _usage_tokens(self.usage)
        span = self.span
        if span is not None:
            attrs: dict[str, Any] = {}
            if how is not None:
                attrs[sc.PYTHIA_STREAM_END] = how
            if self.response_model:
                attrs[sc.GEN_AI_RESPONSE_MODEL] = str(self.response_model)
            if self.response_id:
                attrs[sc.GEN_AI_RESPONSE_ID] = str(self.response_id)
            if self.finish_reasons:
                attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] = self.finish_reasons
            if input_tokens is not None:
                attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] = input_tokens
            if output_tokens is not None:
                attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = output_tokens
            if attrs:
                span.set_attributes(attrs)
            if error is not None:
                record_error(span, error)
            span.end()
        metric_attrs: dict[str, Any] = {
            sc.GEN_AI_OPERATION_NAME: self.op,
            sc.GEN_AI_PROVIDER_NAME: "openai",
        }
        if self.model:
            metric_attrs[sc.GEN_AI_REQUEST_MODEL] = self.model
        if error is not None:
            metric_attrs[sc.ERROR_TYPE] = type(error).__qualname__
        tel = self.telemetry
        tel.duration_s.record((time.monotonic_ns() - self.start_ns) / 1e9, metric_attrs)
        if input_tokens is not None:
            tel.token_usage.record(input_tokens, {**metric_attrs, sc.GEN_AI_TOKEN_TYPE: "input"})
        if output_tokens is not None:
            tel.token_usage.record(output_tokens, {**metric_attrs, sc.GEN_AI_TOKEN_TYPE: "output"})


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
