"""The transport chokepoint: every model call of the ``openai`` client passes here.

We wrap ``SyncAPIClient.request`` / ``AsyncAPIClient.request`` (openai 1.x to 3.x), the one
method every resource method reaches: ``chat.completions.create/parse/stream``,
``completions.create``, ``responses.create/stream``, their ``with_raw_response`` and
``with_streaming_response`` forms, sync and async. Wrapping below the resources means
ChatOpenAI, AutoGen's client and the ``.stream()`` helpers need nothing of their own, and
another OpenAI instrumentation (which wraps the resource methods, above us) is seen as
the current span: we then add our tags to its span instead of opening a second one.

Per call: read the context, add the tags and ``traceparent`` to the request (to the built
request as a rule, see :mod:`._openai_headers`; merged into the caller's headers when the
caller set any, never replacing one of theirs, in ``extra_headers`` or the client's
``default_headers``), open a ``chat {model}`` CLIENT span, and end it when the response
is parsed or the stream ends (exhausted, error, ``close``, ``break`` or collection). Behind
batch span processors the span is only *named* here (its ids go out in ``traceparent``)
and built, with the response read, by a worker after the call (see
:mod:`pythia_sdk._deferred`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from pythia_sdk import _semconv as sc
from pythia_sdk._context import CallContext, get_context
from pythia_sdk._spans import Telemetry, current_span_reader, traceparent
from pythia_sdk.integrations._openai_calls import (
    ModelCall,
    capture_input,
    log_failure,
    observe_async,
    observe_sync,
)
from pythia_sdk.integrations._openai_headers import (
    OUTGOING,
    build_request_wrapper,
    encoded_triples,
    with_traceparent,
)
from pythia_sdk.integrations._openai_raw import observe_raw
from pythia_sdk.protocol import HEADER_PREFIX, AgentTags, merge_headers

log = logging.getLogger("pythia_sdk")

#: Patch targets, as strings so nothing is imported before instrument() runs.
SYNC_TARGET = "openai._base_client:SyncAPIClient.request"
ASYNC_TARGET = "openai._base_client:AsyncAPIClient.request"
BUILD_TARGET = "openai._base_client:BaseClient._build_request"

# path -> (gen_ai.operation.name, pythia.api)
_OPERATIONS: dict[str, tuple[str, str]] = {
    "/chat/completions": (sc.OP_CHAT, "chat.completions"),
    "/completions": (sc.OP_TEXT_COMPLETION, "completions"),
    "/responses": (sc.OP_CHAT, "responses"),
}
_NO_HEADERS: Mapping[str, str] = {}
_FOREIGN_OPERATIONS = frozenset({sc.OP_CHAT, sc.OP_TEXT_COMPLETION, "generate_content"})
_TRACEPARENT = "traceparent"


class _Types:
    """openai classes the wrapper dispatches on, imported once at patch time."""

    def __init__(self) -> None:
        import openai
        from openai._legacy_response import LegacyAPIResponse
        from openai._response import BaseAPIResponse

        self.stream = openai.Stream
        self.async_stream = openai.AsyncStream
        self.legacy = LegacyAPIResponse
        self.raw = BaseAPIResponse
        self.not_given = type(openai.NOT_GIVEN)
        #: Result types seen to be none of the above (parsed models), checked first.
        self.plain: set[type] = set()


# -- the wrapper -----------------------------------------------------------------------------
class Chokepoint:
    """Builds the sync and async ``request`` wrappers around one Telemetry."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.types = _Types()
        self.current_span = current_span_reader()
        #: The last current span found not to be another instrumentation's chat span
        #: (an agent's span serves many calls; a foreign chat span is new per call).
        self._not_foreign: Any = None

    def begin(self, client: Any, options: Any, stream: bool) -> ModelCall | None:
        """Tag the request in ``options`` and open its span; None when not a model call."""
        url = options.url
        op_api = _OPERATIONS.get(url) if type(url) is str else None
        if op_api is None:
            return None
        body = options.json_data
        if type(body) is not dict and not isinstance(body, Mapping):
            body = _NO_HEADERS

        ctx: CallContext | None = get_context()
        tags: AgentTags | None = None
        parent: Span | None = None
        encoded: Mapping[str, str] = _NO_HEADERS
        tag_attrs: Mapping[str, str] = _NO_HEADERS
        if ctx is not None:
            tags, encoded, tag_attrs = ctx.tags, ctx.headers, ctx.attributes
            if ctx.resolver is not None:
                resolved = ctx.resolver(ctx)
                if resolved is not None:
                    tags, encoded, parent = resolved.tags, resolved.headers, resolved.parent_span
                    tag_attrs = resolved.attributes

        telemetry = self.telemetry
        gateway = telemetry.gateway
        if gateway is not None and gateway.endpoint is None:
            gateway.learn(client.base_url)

        call = ModelCall(telemetry, op_api, body, (tag_attrs, stream, client._base_url))
        current = self.current_span()
        tp: str | None = None
        deferred = telemetry.deferred
        if current is not self._not_foreign and _is_foreign_chat_span(current):
            if tag_attrs:
                current.set_attributes(tag_attrs)
            tp = traceparent(current)
            call.deferred = deferred is not None and deferred.active
        elif not telemetry.tracing:  # tags only
            self._not_foreign = current
        else:
            self._not_foreign = current
            # the span built off the call path, or (None) here:
            tp = deferred.announce(call, parent if parent is not None else current) \
                if deferred is not None else None
            if tp is None:
                model = call.model
                context = trace.set_span_in_context(parent) if parent is not None else None
                span = telemetry.tracer.start_span(
                    f"{call.op} {model}" if model else call.op, context=context,
                    kind=SpanKind.CLIENT, attributes=call.request_attributes(),
                )
                if telemetry.settings.capture_content and span.is_recording():
                    capture_input(span, body)
                call.span = span
                tp = traceparent(span)

        caller = options.headers  # usually openai's NOT_GIVEN
        if type(caller) is self.types.not_given or not caller \
                or (type(caller) is not dict and not isinstance(caller, Mapping)):
            caller = None
        defaults = client._custom_headers
        if defaults:  # a tag set in the client's default_headers wins too
            ours = {k: v for k, v in defaults.items() if k.lower().startswith(HEADER_PREFIX)}
            if ours:
                caller = {**ours, **(caller or {})}
        if not caller:  # the common case: added to the built request (_openai_headers)
            call.outgoing = with_traceparent(encoded_triples(encoded), tp)
            return call
        # the caller's headers: merged into the options, theirs kept
        headers = merge_headers(caller, tags) if tags is not None else dict(caller)
        if tp is not None and all(k.lower() != _TRACEPARENT for k in headers):
            headers[_TRACEPARENT] = tp
        options.headers = headers
        return call

    def finish(self, call: ModelCall, result: Any) -> Any:
        """End the span now, or hand it to the stream; returns ``result`` unchanged."""
        if type(result) in self.types.plain:  # the common case: a parsed model object
            if call.deferred:  # the worker reads the response, off the call path
                call.result = result
                call.end()
            elif call.span is not None or self.telemetry.metrics_live():
                call.on_response(result)
                call.end()
            else:  # tags only, no meter provider: nothing would read the response
                call.ended = True
            return result
        t = self.types
        if isinstance(result, t.stream):
            observe_sync(result, call)
        elif isinstance(result, t.async_stream):
            observe_async(result, call)
        elif isinstance(result, t.legacy):  # with_raw_response: parse() is cached
            parsed = result.parse()
            if isinstance(parsed, t.stream):
                observe_sync(parsed, call)
            elif isinstance(parsed, t.async_stream):
                observe_async(parsed, call)
            else:
                call.on_response(parsed)
                call.end()
        elif isinstance(result, t.raw):  # with_streaming_response: ends with the body
            observe_raw(result, call)
        else:
            self.types.plain.add(type(result))  # not a stream nor a raw response
            call.on_response(result)
            call.end()
        return result

    # The two wrappers below differ only in awaiting the original; both fail open:
    # an instrumentation fault is logged and the user's call always goes through.
    def _finish_or_result(self, call: ModelCall, result: Any) -> Any:
        try:
            return self.finish(call, result)
        except Exception as exc:
            log_failure("openai response", exc)
            call.end()
            return result

    def sync_wrapper(self, original: Callable[..., Any]) -> Callable[..., Any]:
        begin, finish = self.begin, self._finish_or_result

        def request(self_: Any, cast_to: Any, options: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                call = begin(self_, options, bool(kwargs.get("stream")))
            except Exception as exc:
                log_failure("openai request", exc)
                call = None
            if call is None:
                return original(self_, cast_to, options, *args, **kwargs)
            outgoing = call.outgoing
            token = OUTGOING.set((self_, outgoing)) if outgoing else None
            try:
                result = original(self_, cast_to, options, *args, **kwargs)
            except BaseException as exc:
                call.end(error=exc)
                raise
            finally:
                if token is not None:
                    OUTGOING.reset(token)
            return finish(call, result)

        request.__pythia_original__ = original  # type: ignore[attr-defined]
        return request

    def async_wrapper(self, original: Callable[..., Any]) -> Callable[..., Any]:
        begin, finish = self.begin, self._finish_or_result

        async def request(self_: Any, cast_to: Any, options: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                call = begin(self_, options, bool(kwargs.get("stream")))
            except Exception as exc:
                log_failure("openai request", exc)
                call = None
            if call is None:
                return await original(self_, cast_to, options, *args, **kwargs)
            outgoing = call.outgoing
            token = OUTGOING.set((self_, outgoing)) if outgoing else None
            try:
                result = await original(self_, cast_to, options, *args, **kwargs)
            except BaseException as exc:
                call.end(error=exc)
                raise
            finally:
                if token is not None:
                    OUTGOING.reset(token)
            return finish(call, result)

        request.__pythia_original__ = original  # type: ignore[attr-defined]
        return request


def _is_foreign_chat_span(span: Span) -> bool:
    """True when another instrumentation's model-call span is current (no duplicate)."""
    if not span.is_recording():
        return False
    attrs = getattr(span, "attributes", None)
    if attrs:
        op = attrs.get(sc.GEN_AI_OPERATION_NAME)
        if op is not None:
            return op in _FOREIGN_OPERATIONS
    name = getattr(span, "name", "")
    return isinstance(name, str) and (name.startswith("chat ") or name == "openai.chat")


# -- instrument / uninstrument -------------------------------------------------------------
GLOBAL_KEY = "openai"


def instrument_all(telemetry: Telemetry) -> bool:
    """Wrap every openai client (class-level); False when already done."""
    from pythia_sdk._instrumentor import REGISTRY, patch_target

    if REGISTRY.has(GLOBAL_KEY):
        return False
    point = Chokepoint(telemetry)
    patches = [
        patch_target(SYNC_TARGET, point.sync_wrapper),
        patch_target(ASYNC_TARGET, point.async_wrapper),
        patch_target(BUILD_TARGET, build_request_wrapper),
    ]
    return REGISTRY.add(GLOBAL_KEY, patches)


def instrument_client(client: Any, telemetry: Telemetry) -> bool:
    """Wrap one client instance; False when it (or every client) is already wrapped."""
    import types

    from openai._base_client import AsyncAPIClient, SyncAPIClient

    from pythia_sdk._instrumentor import REGISTRY, object_key, patch_instance, resolve_target

    key = object_key(client)
    if REGISTRY.has(GLOBAL_KEY) or REGISTRY.has(key):
        return False
    point = Chokepoint(telemetry)
    is_async = isinstance(client, AsyncAPIClient)
    if not is_async and not isinstance(client, SyncAPIClient):
        raise TypeError(f"not an openai client: {type(client).__name__}")
    owner, attr = resolve_target(ASYNC_TARGET if is_async else SYNC_TARGET)
    original = getattr(owner.__dict__[attr], "__pythia_original__", owner.__dict__[attr])
    wrapper = point.async_wrapper(original) if is_async else point.sync_wrapper(original)
    build = type(client)._build_request
    build = getattr(build, "__pythia_original__", build)
    patches = [
        patch_instance(client, attr, types.MethodType(wrapper, client)),
        patch_instance(client, "_build_request",
                       types.MethodType(build_request_wrapper(build), client)),
    ]
    return REGISTRY.add(key, patches, obj=client)


def is_openai_client(obj: Any) -> bool:
    try:
        from openai._base_client import AsyncAPIClient, SyncAPIClient
    except ImportError:  # pragma: no cover - openai is a dependency
        return False
    return isinstance(obj, (SyncAPIClient, AsyncAPIClient))
