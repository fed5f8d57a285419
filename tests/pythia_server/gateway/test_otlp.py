"""OTLP/HTTP ingest over real loopback HTTP: protobuf, JSON, gzip, and all-or-nothing 400s."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from starlette.applications import Starlette
from starlette.routing import Route

import pythia_sdk as pythia
from pythia_sdk import _semconv as sc
from pythia_server.gateway.otlp import SpanRecord, decode_traces, make_otlp_endpoint
from tests.pythia_sdk.fake_openai import ServerThread, free_port, start_fake_openai

TRACE = bytes(range(1, 17))
SPAN = bytes(range(1, 9))


class Sink:
    def __init__(self) -> None:
        self.batches: list[list[SpanRecord]] = []
        self.lock = threading.Lock()

    async def __call__(self, records: list[SpanRecord]) -> None:
        with self.lock:
            self.batches.append(records)

    @property
    def records(self) -> list[SpanRecord]:
        with self.lock:
            return [r for batch in self.batches for r in batch]


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[str, Sink]]:
    sink = Sink()
    app = Starlette(routes=[Route("/v1/traces", make_otlp_endpoint(sink), methods=["POST"])])
    port = free_port()
    server = ServerThread(app, port)
    server.start()
    yield f"http://127.0.0.1:{port}/v1/traces", sink
    server.stop()


@pytest.fixture
def sink(receiver: tuple[str, Sink]) -> Sink:
    receiver[1].batches.clear()
    return receiver[1]


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        any_value = AnyValue(bool_value=value)
    elif isinstance(value, int):
        any_value = AnyValue(int_value=value)
    else:
        any_value = AnyValue(string_value=str(value))
    return KeyValue(key=key, value=any_value)


def proto_request(*spans: Span) -> bytes:
    request = ExportTraceServiceRequest(resource_spans=[
        ResourceSpans(scope_spans=[ScopeSpans(spans=list(spans))])])
    return request.SerializeToString()


def chat_span(span_id: bytes = SPAN, **attrs: Any) -> Span:
    base = {sc.GEN_AI_OPERATION_NAME: "chat", sc.PYTHIA_WORKFLOW: "wf", sc.PYTHIA_SESSION: "s1",
            sc.PYTHIA_AGENT: "planner", sc.GEN_AI_REQUEST_MODEL: "m",
            sc.GEN_AI_USAGE_INPUT_TOKENS: 12, sc.GEN_AI_USAGE_OUTPUT_TOKENS: 3,
            sc.GEN_AI_INPUT_MESSAGES: "[secret prompt]", "http.url": "x", **attrs}
    return Span(trace_id=TRACE, span_id=span_id, name="chat m", start_time_unix_nano=10,
                end_time_unix_nano=20, attributes=[_kv(k, v) for k, v in base.items()])


def test_protobuf_decodes_tags_tokens_and_drops_content() -> None:
    (record,) = decode_traces(proto_request(chat_span()), "application/x-protobuf", None)
    assert record.trace_id == TRACE.hex() and record.span_id == SPAN.hex()
    assert record.parent_span_id is None
    assert (record.operation, record.workflow, record.session, record.agent) == \
        ("chat", "wf", "s1", "planner")
    assert (record.model, record.input_tokens, record.output_tokens) == ("m", 12, 3)
    assert (record.start_ns, record.end_ns, record.status) == (10, 20, "unset")
    assert record.attributes == {}  # content and foreign keys are not kept
    assert not record.ends_session


def test_json_and_gzip_decode_the_same() -> None:
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": TRACE.hex(), "spanId": SPAN.hex(), "parentSpanId": "",
        "name": "invoke_workflow wf", "startTimeUnixNano": "5", "endTimeUnixNano": "9",
        "status": {"code": "STATUS_CODE_ERROR"},
        "attributes": [
            {"key": sc.GEN_AI_OPERATION_NAME, "value": {"stringValue": "invoke_workflow"}},
            {"key": sc.GEN_AI_CONVERSATION_ID, "value": {"stringValue": "s9"}},
            {"key": sc.PYTHIA_WORKFLOW, "value": {"stringValue": "wf"}},
            {"key": sc.PYTHIA_FRAMEWORK, "value": {"stringValue": "langgraph"}},
            {"key": "gen_ai.response.finish_reasons",
             "value": {"arrayValue": {"values": [{"stringValue": "stop"}]}}},
        ]}]}]}]}
    raw = json.dumps(body).encode()
    (plain,) = decode_traces(raw, "application/json", None)
    (zipped,) = decode_traces(gzip.compress(raw), "application/json; charset=utf-8", "gzip")
    assert plain == zipped
    assert plain.session == "s9" and plain.status == "error" and plain.ends_session
    assert plain.attributes == {sc.PYTHIA_FRAMEWORK: "langgraph",
                                "gen_ai.response.finish_reasons": ["stop"]}


def test_invalid_tag_values_are_dropped_not_fatal() -> None:
    (record,) = decode_traces(proto_request(chat_span(**{sc.PYTHIA_AGENT: "bad\nagent"})),
                              None, None)
    assert record.agent is None and record.session == "s1"


@pytest.mark.parametrize(("body", "content_type", "encoding", "message"), [
    (b"\xff\xff\xff", "application/x-protobuf", None, "ExportTraceServiceRequest"),
    (b"{not json", "application/json", None, "invalid JSON"),
    (b"{}", "text/plain", None, "Content-Type"),
    (b"not gzip", "application/json", "gzip", "gzip"),
    (b"{}", "application/json", "br", "Content-Encoding"),
])
def test_malformed_payloads_get_400_and_nothing_is_stored(
        receiver: tuple[str, Sink], sink: Sink, body: bytes, content_type: str,
        encoding: str | None, message: str) -> None:
    headers = {"content-type": content_type}
    if encoding:
        headers["content-encoding"] = encoding
    response = httpx.post(receiver[0], content=body, headers=headers)
    assert response.status_code == 400
    error = response.json()["error"]
    assert message in error["message"] and error["type"] == "invalid_request_error"
    assert sink.records == []


def test_one_bad_span_rejects_the_whole_batch(receiver: tuple[str, Sink], sink: Sink) -> None:
    good = chat_span()
    bad = chat_span(span_id=b"\x01\x02")  # not 8 bytes
    response = httpx.post(receiver[0], content=proto_request(good, bad),
                          headers={"content-type": "application/x-protobuf"})
    assert response.status_code == 400
    assert "spanId" in response.json()["error"]["message"]
    assert sink.records == []
    ok = httpx.post(receiver[0], content=proto_request(good),
                    headers={"content-type": "application/x-protobuf"})
    assert ok.status_code == 200 and len(sink.records) == 1


def test_real_exporter_from_the_sdk_reaches_the_decoder(
        receiver: tuple[str, Sink], sink: Sink) -> None:
    """SDK spans -> OTLPSpanExporter (protobuf) -> loopback -> SpanRecords."""
    fake, thread = start_fake_openai()
    pythia.uninstrument()
    try:
        pythia.instrument(endpoint=receiver[0], capture_content=True)
        client = openai.OpenAI(base_url=fake.base_url, api_key="unused")
        with pythia.workflow("deep_research", session="sess-1"):
            with pythia.agent("planner"):
                client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "private words"}])
            with pythia.tool("search"):
                pass
        assert pythia.flush(10)
    finally:
        pythia.uninstrument()
        thread.stop()
    records = {r.operation: r for r in sink.records}
    assert set(records) == {"chat", "invoke_agent", "execute_tool", "invoke_workflow"}
    chat, root = records["chat"], records["invoke_workflow"]
    assert (chat.workflow, chat.session, chat.agent, chat.model) == \
        ("deep_research", "sess-1", "planner", "m")
    assert chat.input_tokens and chat.output_tokens == 2
    assert chat.parent_span_id == records["invoke_agent"].span_id
    assert records["execute_tool"].tool_name == "search"
    assert root.ends_session and root.parent_span_id is None and root.name == \
        "invoke_workflow deep_research"
    assert all("private words" not in json.dumps(r.attributes) for r in sink.records)
    assert chat.attributes[sc.PYTHIA_API] == "chat.completions"


def test_default_endpoint_is_the_gateway_of_the_client() -> None:
    fake, thread = start_fake_openai()
    pythia.uninstrument()
    try:
        pythia.instrument()
        client = openai.OpenAI(base_url=fake.base_url, api_key="unused")
        with pythia.workflow("wf", session="s"), pythia.agent("a"):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert pythia.flush(10)
    finally:
        pythia.uninstrument()
        thread.stop()
    records = [r for headers, body in fake.traces
               for r in decode_traces(body, headers.get("content-type"),
                                      headers.get("content-encoding"))]
    assert {r.operation for r in records} == {"chat", "invoke_agent", "invoke_workflow"}


def test_sink_is_awaited_in_the_server_loop() -> None:
    """make_otlp_endpoint works with an async sink that really awaits."""
    seen: list[int] = []

    async def slow_sink(records: list[SpanRecord]) -> None:
        await asyncio.sleep(0)
        seen.append(len(records))

    app = Starlette(routes=[Route("/v1/traces", make_otlp_endpoint(slow_sink), methods=["POST"])])
    port = free_port()
    server = ServerThread(app, port)
    server.start()
    try:
        response = httpx.post(f"http://127.0.0.1:{port}/v1/traces",
                              content=gzip.compress(proto_request(chat_span())),
                              headers={"content-type": "application/x-protobuf",
                                       "content-encoding": "gzip"})
    finally:
        server.stop()
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    assert seen == [1]


def test_sdk_spans_end_sessions_in_the_real_gateway(sim_gateway: Any) -> None:
    """SDK -> gateway (simulated engines) -> OTLP back to the same gateway: sessions end."""
    from tests.pythia_server.gateway.conftest import SIM_MODEL

    pythia.uninstrument()
    try:
        pythia.instrument()  # default endpoint: the gateway the client talks to
        client = openai.OpenAI(base_url=sim_gateway.url + "/v1", api_key="unused")
        for run in ("run-1", "run-2"):
            with pythia.workflow("deep_research", session=run):
                for agent in ("planner", "writer"):
                    with pythia.agent(agent):
                        client.chat.completions.create(
                            model=SIM_MODEL, max_tokens=4,
                            messages=[{"role": "user", "content": f"{agent} of {run}"}])
        assert pythia.flush(10)
    finally:
        pythia.uninstrument()
    sessions = httpx.get(sim_gateway.url + "/pythia/api/sessions").json()["sessions"]
    ended = {s["session"]: s for s in sessions if s["workflow"] == "deep_research"}
    assert set(ended) == {"run-1", "run-2"}
    assert all(s["ended_at"] is not None and s["calls"] == 2 for s in ended.values())
