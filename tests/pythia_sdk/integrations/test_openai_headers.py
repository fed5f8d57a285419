"""Tags and ``traceparent`` added to the built request (``_openai_headers``): on every
retry, through subclasses that build their own requests, and through the public API for
a ``Headers`` class without httpx's list layout."""

from __future__ import annotations

import json
import socket
import threading
from typing import Any

import httpx
import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import pythia_sdk as pythia
from pythia_sdk.integrations import _openai_headers as wire
from pythia_sdk.protocol import HEADER_AGENT, HEADER_SESSION, HEADER_WORKFLOW
from tests.pythia_sdk.fake_openai import FakeOpenAI

MESSAGES = [{"role": "user", "content": "hello"}]
ANSWER = {"id": "c", "object": "chat.completion", "created": 0, "model": "m",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                       "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


def test_every_retry_carries_the_tags_and_the_same_traceparent(
        fake: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    fake.fail_next = 2
    client = openai.OpenAI(base_url=fake.base_url, api_key="unused", max_retries=2)
    with pythia.workflow("wf", session="s-9"), pythia.agent("writer"):
        reply = client.chat.completions.create(model="m", messages=MESSAGES)
    assert reply.choices[0].message.content == "ok, noted."
    attempts = fake.model_calls()
    assert len(attempts) == 3
    for attempt in attempts:
        assert (attempt.tag("workflow"), attempt.tag("session"), attempt.tag("agent")) == \
            ("wf", "s-9", "writer")
    assert len({a.headers["traceparent"] for a in attempts}) == 1
    assert [a.headers["x-stainless-retry-count"] for a in attempts] == ["0", "1", "2"]


def test_each_header_is_sent_once(spans: InMemorySpanExporter) -> None:
    """The raw bytes on the wire: none of ours twice, next to openai's own headers."""
    received: list[bytes] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]

    def serve() -> None:
        conn, _ = server.accept()
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        while len(rest) < length:
            rest += conn.recv(65536)
        received.append(head)
        body = json.dumps(ANSWER).encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                     + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused",
                           max_retries=0)
    with pythia.workflow("wf", session="s-1"), pythia.agent("a"):
        client.chat.completions.create(model="m", messages=MESSAGES)
    thread.join(5)
    server.close()
    names = [line.split(b":")[0].lower() for line in received[0].split(b"\r\n")[1:]]
    for name in (HEADER_WORKFLOW, HEADER_SESSION, HEADER_AGENT, "traceparent"):
        assert names.count(name.encode()) == 1, name


def test_a_subclass_building_its_own_request_still_sends_the_tags(
        spans: InMemorySpanExporter) -> None:
    """AzureOpenAI overrides ``_build_request`` (deployment URLs) and ``_prepare_options``
    (its auth header): the tags still arrive, on the Azure path."""
    seen: list[Any] = []

    def handler(request: Any) -> Any:
        seen.append(request)
        module = __import__(type(request).__module__.split(".")[0])
        return module.Response(200, json=ANSWER)

    client = openai.AzureOpenAI(api_key="k", api_version="2024-06-01",
                                azure_endpoint="http://azure.invalid",
                                http_client=_mock_client(handler))
    with pythia.workflow("wf", session="s-2"), pythia.agent("critic"):
        client.chat.completions.create(model="gpt", messages=MESSAGES)
    (request,) = seen
    assert "/openai/deployments/gpt/chat/completions" in str(request.url)
    assert request.headers[HEADER_AGENT] == "critic"
    assert request.headers["api-key"] == "k"
    assert request.headers["traceparent"].startswith("00-")


def test_one_instrumented_client_only_tags_its_own_requests() -> None:
    seen: list[Any] = []

    def handler(request: Any) -> Any:
        seen.append(request)
        module = __import__(type(request).__module__.split(".")[0])
        return module.Response(200, json=ANSWER)

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    mine = pythia.instrument(openai.OpenAI(base_url="http://m.invalid/v1", api_key="k",
                                           http_client=_mock_client(handler)),
                             tracer_provider=provider)
    other = openai.OpenAI(base_url="http://o.invalid/v1", api_key="k",
                          http_client=_mock_client(handler))
    with pythia.workflow("wf"), pythia.agent("a"):
        mine.chat.completions.create(model="m", messages=MESSAGES)
        other.chat.completions.create(model="m", messages=MESSAGES)
    assert seen[0].headers.get(HEADER_AGENT) == "a"
    assert seen[1].headers.get(HEADER_AGENT) is None
    pythia.uninstrument(mine)
    assert "_build_request" not in vars(mine)


def _mock_client(handler: Any) -> Any:
    try:
        import httpx2 as module  # openai 3.x
    except ImportError:
        module = httpx
    return module.Client(transport=module.MockTransport(handler))


def test_headers_classes_with_the_list_layout_are_appended_to() -> None:
    try:
        import httpx2
    except ImportError:
        pytest.skip("httpx2 comes with openai 3.x")
    for headers_type in (httpx.Headers, httpx2.Headers):
        headers = headers_type({"Accept": "application/json"})
        wire.add_headers(headers, wire.with_traceparent(
            wire.encoded_triples({HEADER_AGENT: "a"}), "00-1-2-01"))
        assert wire._list_layout[headers_type] is True
        assert headers[HEADER_AGENT] == "a" and headers["TraceParent"] == "00-1-2-01"
        assert headers.raw[-2:] == [(HEADER_AGENT.encode(), b"a"), (b"traceparent", b"00-1-2-01")]


def test_other_headers_classes_get_the_public_setter() -> None:
    class PlainHeaders(dict):  # no _list: set through __setitem__, name by name
        def __init__(self, initial: Any = None) -> None:
            super().__init__({k.lower(): v for k, v in (initial or {}).items()})

        def __setitem__(self, key: str, value: str) -> None:
            super().__setitem__(key.lower(), value)

    headers = PlainHeaders({"Accept": "application/json"})
    wire.add_headers(headers, wire.encoded_triples({HEADER_AGENT: "a", HEADER_SESSION: "s"}))
    assert wire._list_layout[PlainHeaders] is False
    assert headers == {"accept": "application/json", HEADER_AGENT: "a", HEADER_SESSION: "s"}


def test_encoded_triples_are_cached_per_mapping_and_never_confused() -> None:
    first = {HEADER_AGENT: "a"}
    assert wire.encoded_triples(first) is wire.encoded_triples(first)
    second = {HEADER_AGENT: "b"}
    assert wire.encoded_triples(second)[0][2] == b"b"
    assert wire.encoded_triples(first)[0][2] == b"a"


async def test_one_async_client_carries_the_tags_streaming_and_not(fake: FakeOpenAI) -> None:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    client = pythia.instrument(openai.AsyncOpenAI(base_url=fake.base_url, api_key="unused"),
                               tracer_provider=provider)
    async with pythia.workflow("wf", session="s-3"), pythia.agent("solo"):
        await client.chat.completions.create(model="m", messages=MESSAGES)
        async for _ in await client.chat.completions.create(model="m", messages=MESSAGES,
                                                            stream=True):
            pass
    assert [r.tag("agent") for r in fake.model_calls()] == ["solo", "solo"]
    spans = {s.context.span_id: s for s in exporter.get_finished_spans()}
    for request in fake.model_calls():
        _, _, span_id, _ = request.headers["traceparent"].split("-")
        assert int(span_id, 16) in spans  # the chat span each request announced
    pythia.uninstrument(client)
    assert "_build_request" not in vars(client) and "request" not in vars(client)
