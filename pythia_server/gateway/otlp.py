"""OTLP/HTTP trace ingest: decode ``POST /v1/traces`` payloads into :class:`SpanRecord`.

Accepts protobuf (``application/x-protobuf``, the OTLP exporters' default) and OTLP/JSON
(``application/json``: lowerCamelCase keys, hex ids), optionally gzip-encoded. Decoding is
all or nothing: a malformed payload raises :class:`InvalidRequestError` (400) before any
record reaches the sink. Records keep timing, identity, the Pythia tags, token counts
and a bounded set of other ``pythia.*`` / ``gen_ai.*`` attributes; message content
(``gen_ai.input.messages`` and the like) is never kept.

A record with ``operation == "invoke_workflow"`` that has ended is the root span of a
session (the SDK emits that operation only for the scope that owns the session): its
end ends the session.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pythia_sdk import _semconv as sc
from pythia_sdk.protocol import is_valid_value
from pythia_server.errors import InvalidRequestError, PayloadTooLargeError, PythiaError

__all__ = ["SpanRecord", "decode_json", "decode_protobuf", "decode_traces", "make_otlp_endpoint"]

#: Largest accepted body (compressed or not) and largest decompressed payload.
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_DECODED_BYTES = 32 * 1024 * 1024
MAX_SPANS = 20_000
MAX_EXTRA_ATTRIBUTES = 32
MAX_NAME_CHARS = 256
MAX_VALUE_CHARS = 256
_KEPT_PREFIXES = ("pythia.", "gen_ai.")
_STATUS = {0: "unset", 1: "ok", 2: "error"}
_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
# Attributes promoted to columns (not repeated in ``attributes``).
_COLUMNS = frozenset({
    sc.GEN_AI_OPERATION_NAME, sc.PYTHIA_WORKFLOW, sc.PYTHIA_SESSION, sc.PYTHIA_AGENT,
    sc.GEN_AI_CONVERSATION_ID, sc.GEN_AI_AGENT_NAME, sc.GEN_AI_REQUEST_MODEL,
    sc.GEN_AI_RESPONSE_MODEL, sc.GEN_AI_USAGE_INPUT_TOKENS, sc.GEN_AI_USAGE_OUTPUT_TOKENS,
    sc.GEN_AI_TOOL_NAME,
})


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """One span as the gateway keeps it (ids as lowercase hex)."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    start_ns: int
    end_ns: int
    status: str  # unset | ok | error
    operation: str | None = None
    workflow: str | None = None
    session: str | None = None
    agent: str | None = None
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    tool_name: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def ends_session(self) -> bool:
        return self.operation == sc.OP_INVOKE_WORKFLOW and self.end_ns > 0 and bool(self.session)


def _bad(message: str) -> InvalidRequestError:
    return InvalidRequestError(f"malformed OTLP payload: {message}")


# -- building a record from plain values ---------------------------------------------------
def _tag(attrs: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = attrs.get(key)
        if value is not None:
            value = str(value)
            return value if is_valid_value(value) else None
    return None


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = int(value)
    return number if 0 <= number < 2**40 else None


def _bounded(value: Any) -> Any:
    if isinstance(value, str):
        return value[:MAX_VALUE_CHARS]
    if isinstance(value, (list, tuple)):
        return [_bounded(v) for v in value[:16]]
    return value


def _record(
    trace_id: str, span_id: str, parent: str | None, name: str, start_ns: int, end_ns: int,
    status_code: int, attrs: Mapping[str, Any],
) -> SpanRecord:
    extra: dict[str, Any] = {}
    for key in sorted(attrs):
        if len(extra) >= MAX_EXTRA_ATTRIBUTES:
            break
        if key in _COLUMNS or key in sc.CONTENT_ATTRIBUTES or not key.startswith(_KEPT_PREFIXES):
            continue
        extra[key[:MAX_NAME_CHARS]] = _bounded(attrs[key])
    operation = attrs.get(sc.GEN_AI_OPERATION_NAME)
    model = attrs.get(sc.GEN_AI_RESPONSE_MODEL) or attrs.get(sc.GEN_AI_REQUEST_MODEL)
    tool = attrs.get(sc.GEN_AI_TOOL_NAME)
    return SpanRecord(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=name[:MAX_NAME_CHARS],
        start_ns=start_ns,
        end_ns=end_ns,
        status=_STATUS.get(status_code, "unset"),
        operation=str(operation)[:64] if operation is not None else None,
        workflow=_tag(attrs, sc.PYTHIA_WORKFLOW),
        session=_tag(attrs, sc.PYTHIA_SESSION, sc.GEN_AI_CONVERSATION_ID),
        agent=_tag(attrs, sc.PYTHIA_AGENT, sc.GEN_AI_AGENT_NAME),
        model=str(model)[:MAX_VALUE_CHARS] if model is not None else None,
        input_tokens=_count(attrs.get(sc.GEN_AI_USAGE_INPUT_TOKENS)),
        output_tokens=_count(attrs.get(sc.GEN_AI_USAGE_OUTPUT_TOKENS)),
        tool_name=str(tool)[:MAX_VALUE_CHARS] if tool is not None else None,
        attributes=extra,
    )


def _hex_id(raw: bytes, length: int, what: str, optional: bool = False) -> str | None:
    if not raw and optional:
        return None
    if len(raw) != length or not any(raw):
        raise _bad(f"{what} must be {length} non-zero bytes")
    return raw.hex()


def _check_times(start_ns: int, end_ns: int) -> None:
    if start_ns < 0 or end_ns < 0 or (end_ns and end_ns < start_ns):
        raise _bad("span end precedes its start")


def _check_count(records: list[SpanRecord]) -> None:
    if len(records) > MAX_SPANS:
        raise PayloadTooLargeError(f"more than {MAX_SPANS} spans in one OTLP request")


# -- protobuf ------------------------------------------------------------------------------
def _any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return None  # nested maps are not kept
    if kind == "bytes_value":
        return None
    return getattr(value, kind)


def decode_protobuf(payload: bytes) -> list[SpanRecord]:
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    try:
        request = ExportTraceServiceRequest.FromString(payload)
    except (DecodeError, ValueError) as exc:
        raise _bad(f"not an ExportTraceServiceRequest ({exc})") from exc
    records: list[SpanRecord] = []
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attrs = {kv.key: _any_value(kv.value) for kv in span.attributes}
                _check_times(span.start_time_unix_nano, span.end_time_unix_nano)
                records.append(_record(
                    _hex_id(span.trace_id, 16, "traceId") or "",
                    _hex_id(span.span_id, 8, "spanId") or "",
                    _hex_id(span.parent_span_id, 8, "parentSpanId", optional=True),
                    span.name, span.start_time_unix_nano, span.end_time_unix_nano,
                    span.status.code, attrs,
                ))
                _check_count(records)
    return records


# -- JSON ---------------------------------------------------------------------------------
def _json_list(obj: Mapping[str, Any], *keys: str) -> list[Any]:
    for key in keys:
        value = obj.get(key)
        if value is not None:
            if not isinstance(value, list):
                raise _bad(f"{key} must be a list")
            return value
    return []


def _json_object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _bad(f"{what} must be an object")
    return value


def _json_hex(value: Any, length: int, what: str, optional: bool = False) -> str | None:
    if value in (None, "") and optional:
        return None
    if not isinstance(value, str):
        raise _bad(f"{what} must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError as exc:
        raise _bad(f"{what} is not hex") from exc
    return _hex_id(raw, length, what, optional)


def _json_int(value: Any, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool):
        raise _bad(f"{what} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise _bad(f"{what} must be an integer")


def _json_value(value: Any) -> Any:
    if not isinstance(value, Mapping):
        raise _bad("attribute value must be an AnyValue object")
    if "stringValue" in value:
        return str(value["stringValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        return _json_int(value["intValue"], "intValue")
    if "doubleValue" in value:
        try:
            return float(value["doubleValue"])
        except (TypeError, ValueError) as exc:
            raise _bad("doubleValue must be a number") from exc
    if "arrayValue" in value:
        array = _json_object(value["arrayValue"], "arrayValue")
        return [_json_value(v) for v in _json_list(array, "values")]
    return None


def _json_status(status: Any) -> int:
    if status is None:
        return 0
    code = _json_object(status, "status").get("code", 0)
    if isinstance(code, str):
        return _STATUS_NAMES.get(code, 0)
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


def decode_json(payload: bytes) -> list[SpanRecord]:
    try:
        document = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"invalid JSON ({exc})") from exc
    document = _json_object(document, "the body")
    records: list[SpanRecord] = []
    for resource_spans in _json_list(document, "resourceSpans", "resource_spans"):
        resource_spans = _json_object(resource_spans, "resourceSpans[]")
        scopes = _json_list(resource_spans, "scopeSpans", "scope_spans",
                            "instrumentationLibrarySpans")
        for scope_spans in scopes:
            scope_spans = _json_object(scope_spans, "scopeSpans[]")
            for span in _json_list(scope_spans, "spans"):
                span = _json_object(span, "spans[]")
                attrs: dict[str, Any] = {}
                for kv in _json_list(span, "attributes"):
                    kv = _json_object(kv, "attributes[]")
                    key = kv.get("key")
                    if not isinstance(key, str):
                        raise _bad("attribute key must be a string")
                    attrs[key] = _json_value(kv.get("value", {}))
                name = span.get("name", "")
                if not isinstance(name, str):
                    raise _bad("span name must be a string")
                start_ns = _json_int(span.get("startTimeUnixNano"), "startTimeUnixNano")
                end_ns = _json_int(span.get("endTimeUnixNano"), "endTimeUnixNano")
                _check_times(start_ns, end_ns)
                records.append(_record(
                    _json_hex(span.get("traceId"), 16, "traceId") or "",
                    _json_hex(span.get("spanId"), 8, "spanId") or "",
                    _json_hex(span.get("parentSpanId"), 8, "parentSpanId", optional=True),
                    name, start_ns, end_ns, _json_status(span.get("status")), attrs,
                ))
                _check_count(records)
    return records


# -- the endpoint ----------------------------------------------------------------------------
def _gunzip(payload: bytes) -> bytes:
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(payload, MAX_DECODED_BYTES)
    except zlib.error as exc:
        raise _bad(f"bad gzip data ({exc})") from exc
    if decompressor.unconsumed_tail:
        raise PayloadTooLargeError(f"decompressed OTLP payload exceeds {MAX_DECODED_BYTES} bytes")
    if not decompressor.eof:
        raise _bad("truncated gzip data")
    return out


def decode_traces(payload: bytes, content_type: str | None, content_encoding: str | None
                  ) -> list[SpanRecord]:
    """All spans in one OTLP/HTTP body, or InvalidRequestError; nothing partial."""
    encoding = (content_encoding or "").strip().lower()
    if encoding == "gzip":
        payload = _gunzip(payload)
    elif encoding not in ("", "identity"):
        raise InvalidRequestError(f"unsupported Content-Encoding {content_encoding!r}")
    media = (content_type or "application/x-protobuf").split(";")[0].strip().lower()
    if media == "application/json":
        return decode_json(payload)
    if media in ("application/x-protobuf", "application/protobuf", "application/octet-stream"):
        return decode_protobuf(payload)
    raise InvalidRequestError(
        f"unsupported Content-Type {content_type!r}: use application/x-protobuf or application/json"
    )


Sink = Callable[[list[SpanRecord]], Awaitable[None]]


def make_otlp_endpoint(sink: Sink) -> Callable[[Any], Awaitable[Any]]:
    """A Starlette endpoint for ``POST /v1/traces`` handing decoded records to ``sink``."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    from pythia_server.gateway.validation import read_body

    async def traces(request: Request) -> Response:
        media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        try:
            raw = await read_body(request, MAX_BODY_BYTES)
            records = decode_traces(raw, request.headers.get("content-type"),
                                    request.headers.get("content-encoding"))
        except PythiaError as exc:
            return JSONResponse(exc.to_body(), status_code=exc.status_code)
        if records:
            await sink(records)
        if media == "application/json":
            return JSONResponse({})
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceResponse,
        )

        return Response(ExportTraceServiceResponse().SerializeToString(),
                        media_type="application/x-protobuf")

    return traces


def iter_session_ends(records: Iterable[SpanRecord]) -> list[tuple[str | None, str, int]]:
    """(workflow, session, end_ns) for each record that ends its session."""
    return [(r.workflow, r.session or "", r.end_ns) for r in records if r.ends_session]
