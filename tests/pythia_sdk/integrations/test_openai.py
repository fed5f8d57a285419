"""The openai chokepoint against a real loopback server: tags, headers, spans, streams."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import pythia_sdk as pythia
from pythia_sdk import _semconv as sc
from pythia_sdk.integrations import openai as chokepoint
from pythia_sdk.protocol import HEADER_AGENT, HEADER_WORKFLOW
from tests.pythia_sdk.fake_openai import FakeOpenAI

MESSAGES = [{"role": "user", "content": "hello"}]


def chat_spans(exporter: InMemorySpanExporter) -> list[Any]:
    return [s for s in exporter.get_finished_spans()
            if s.attributes.get(sc.GEN_AI_OPERATION_NAME) in ("chat", "text_completion")]


def test_every_api_carries_the_tags(fake: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    client = openai.OpenAI(base_url=fake.base_url, api_key="unused")
    with pythia.workflow("wf", session="s-1"), pythia.agent("planner"):
        client.chat.completions.create(model="m", messages=MESSAGES)
        for _ in client.chat.completions.create(model="m", messages=MESSAGES, stream=True):
            pass
        client.chat.completions.parse(model="m", messages=MESSAGES)
        with client.chat.completions.stream(model="m", messages=MESSAGES) as stream:
            for _ in stream:
                pass
        client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES).parse()
        with client.chat.completions.with_streaming_response.create(
                model="m", messages=MESSAGES) as response:
            response.parse()
        client.completions.create(model="m", prompt="hi")
        client.responses.create(model="m", input="hi")
        with client.responses.stream(model="m", input="hi") as rstream:
            for _ in rstream:
                pass
        client.models.list()  # not a model call: untouched
    calls = fake.model_calls()
    model_calls = [c for c in calls if c.path != "/v1/models"]
    assert len(model_calls) == 9
    for call in model_calls:
        assert (call.tag("workflow"), call.tag("session"), call.tag("agent")) == ("wf", "s-1", "planner")
        assert call.headers["traceparent"].startswith("00-")
    models_call = [c for c in calls if c.path == "/v1/models"][0]
    assert models_call.tag("agent") is None
    finished = chat_spans(spans)
    assert len(finished) == 9
    assert {s.name for s in finished} == {"chat m", "text_completion m"}
    # every request's traceparent names its own chat span
    span_ids = {f"{s.context.span_id:016x}" for s in finished}
    assert {c.headers["traceparent"].split("-")[2] for c in model_calls} == span_ids


async def test_async_apis_carry_the_tags(fake: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="unused")
    async with pythia.session("s-2", workflow="wf"), pythia.agent("writer"):
        await client.chat.completions.create(model="m", messages=MESSAGES)
        stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        async for _ in stream:
            pass
        raw = await client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
        raw.parse()
        await client.responses.create(model="m", input="hi")
        await client.completions.create(model="m", prompt="hi")
    assert [c.tag("agent") for c in fake.model_calls()] == ["writer"] * 5
    assert [s.attributes[sc.GEN_AI_CONVERSATION_ID] for s in chat_spans(spans)] == ["s-2"] * 5


def test_usage_and_response_recorded(fake: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    client = openai.OpenAI(base_url=fake.base_url, api_key="unused")
    with pythia.workflow("wf"), pythia.agent("a"):
        client.chat.completions.create(model="m", messages=MESSAGES)
        for _ in client.chat.completions.create(model="m", messages=MESSAGES, stream=True,
                                                stream_options={"include_usage": True}):
            pass
    plain, streamed = chat_spans(spans)
    for span in (plain, streamed):
        assert span.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] > 0
        assert span.attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 2  # "ok, noted."
        assert span.attributes[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert streamed.attributes[sc.PYTHIA_STREAM_END] == "exhausted"
    assert sc.GEN_AI_INPUT_MESSAGES not in plain.attributes  # content off by default


def test_caller_headers_are_never_overwritten(fake: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    client = openai.OpenAI(base_url=fake.base_url, api_key="unused",
                           default_headers={HEADER_WORKFLOW: "from-defaults"})
    mine = {HEADER_AGENT: "from-caller", "traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    with pythia.workflow("wf", session="s"), pythia.agent("ctx-agent"):
        client.chat.completions.create(model="m", messages=MESSAGES, extra_headers=mine)
        client.chat.completions.create(model="m", messages=MESSAGES)
    first, second = fake.model_calls()
    assert first.tag("workflow") == "from-defaults"
    assert first.tag("agent") == "from-caller"
    assert first.tag("session") == "s"
    assert first.headers["traceparent"] == mine["traceparent"]
    assert second.tag("agent") == "ctx-agent"  # the caller's dict was not mutated
    assert mine == {HEADER_AGENT: "from-caller", "traceparent": mine["traceparent"]}


def test_stream_span_ends_on_break_close_and_collection(
        fake: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    fake.responder = lambda body: {"content": "one two three four five"}
    client = openai.OpenAI(base_url=fake.base_url, api_key="unused")
    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    for _ in stream:
        break
    del stream
    gc.collect()
    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    next(iter(stream))
    stream.close()
    with client.chat.completions.create(model="m", messages=MESSAGES, stream=True) as stream:
        pass  # never iterated
    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    del stream
    gc.collect()
    ends = [s.attributes.get(sc.PYTHIA_STREAM_END) for s in chat_spans(spans)]
    assert len(ends) == 4
    assert ends[0] in ("closed", "collected")  # break, then the stream is dropped
    assert ends[1:] == ["closed", "closed", "collected"]


async def test_twenty_concurrent_streaming_sessions_do_not_cross_talk(
        fake: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    fake.responder = lambda body: {"content": "a b c d e f"}
    client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="unused")

    async def session(i: int) -> None:
        async with pythia.workflow("fanout", session=f"s{i}"):
            for step in range(3):
                async with pythia.agent(f"agent{i}-{step}"):
                    stream = await client.chat.completions.create(
                        model="m", messages=[{"role": "user", "content": f"s{i} {step}"}],
                        stream=True)
                    async for _ in stream:
                        await asyncio.sleep(0)

    await asyncio.gather(*(session(i) for i in range(20)))
    calls = fake.model_calls()
    assert len(calls) == 60
    for call in calls:
        i, step = call.body["messages"][0]["content"][1:].split()
        assert call.tag("session") == f"s{i}"
        assert call.tag("agent") == f"agent{i}-{step}"
    for span in chat_spans(spans):
        assert span.attributes[sc.PYTHIA_STREAM_END] == "exhausted"
        assert span.attributes[sc.GEN_AI_AGENT_NAME].startswith(
            "agent" + span.attributes[sc.GEN_AI_CONVERSATION_ID][1:] + "-")


def test_user_errors_are_recorded_and_reraised_unchanged(
        fake: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    client = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="m", messages=MESSAGES)
    (span,) = chat_spans(spans)
    assert span.status.is_ok is False
    assert span.attributes[sc.ERROR_TYPE] == "APIConnectionError"


def test_instrumentation_fault_never_breaks_the_call(
        fake: FakeOpenAI, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def broken(self: Any, *args: Any) -> None:
        raise RuntimeError("instrumentation bug")

    monkeypatch.setattr(chokepoint.Chokepoint, "begin", broken)
    pythia.uninstrument("openai")
    pythia.instrument()
    client = openai.OpenAI(base_url=fake.base_url, api_key="unused")
    with caplog.at_level(logging.WARNING, logger="pythia_sdk"):
        result = client.chat.completions.create(model="m", messages=MESSAGES)
    assert result.choices[0].message.content == "ok, noted."
    assert "instrumentation error" in caplog.text


def test_uninstrument_restores_and_double_instrument_warns(
        fake: FakeOpenAI, spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture) -> None:
    from openai._base_client import AsyncAPIClient, SyncAPIClient

    wrapped = SyncAPIClient.__dict__["request"]
    original = wrapped.__pythia_original__
    with caplog.at_level(logging.WARNING, logger="pythia_sdk"):
        pythia.instrument()
    assert "already instrumented" in caplog.text
    assert SyncAPIClient.__dict__["request"] is wrapped
    pythia.uninstrument()
    assert SyncAPIClient.__dict__["request"] is original
    assert not hasattr(AsyncAPIClient.__dict__["request"], "__pythia_original__")
    client = openai.OpenAI(base_url=fake.base_url, api_key="unused")
    with pythia.workflow("wf"), pythia.agent("a"):
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert fake.model_calls()[0].tag("agent") is None


def test_one_client_only(fake: FakeOpenAI) -> None:
    pythia.uninstrument()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        mine = pythia.instrument(openai.OpenAI(base_url=fake.base_url, api_key="unused"),
                                 tracer_provider=provider)
        other = openai.OpenAI(base_url=fake.base_url, api_key="unused")
        with pythia.workflow("wf"), pythia.agent("a"):
            mine.chat.completions.create(model="m", messages=MESSAGES)
            other.chat.completions.create(model="m", messages=MESSAGES)
        first, second = fake.model_calls()
        assert first.tag("agent") == "a" and second.tag("agent") is None
        assert pythia.is_instrumented(mine)
        pythia.uninstrument(mine)
        assert "request" not in vars(mine)
    finally:
        pythia.uninstrument()


def test_no_duplicate_span_under_another_instrumentation(
        fake: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    from opentelemetry import trace

    other = TracerProvider().get_tracer("another.openai.instrumentation")
    client = openai.OpenAI(base_url=fake.base_url, api_key="unused")
    with pythia.workflow("wf"), pythia.agent("a"):
        with other.start_as_current_span(
                "chat m", attributes={sc.GEN_AI_OPERATION_NAME: "chat"}) as theirs:
            client.chat.completions.create(model="m", messages=MESSAGES)
            assert theirs.attributes[sc.GEN_AI_AGENT_NAME] == "a"
            tp_span = f"{theirs.get_span_context().span_id:016x}"
    assert chat_spans(spans) == []
    assert fake.model_calls()[0].headers["traceparent"].split("-")[2] == tp_span
    assert trace.get_current_span().is_recording() is False


def test_capture_content_when_enabled(fake: FakeOpenAI) -> None:
    pythia.uninstrument()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        pythia.instrument(tracer_provider=provider, capture_content=True)
        client = openai.OpenAI(base_url=fake.base_url, api_key="unused")
        client.chat.completions.create(model="m", messages=MESSAGES)
        (span,) = chat_spans(exporter)
        assert "hello" in span.attributes[sc.GEN_AI_INPUT_MESSAGES]
        assert "ok, noted." in span.attributes[sc.GEN_AI_OUTPUT_MESSAGES]
    finally:
        pythia.uninstrument()


async def test_async_stream_ends_on_close_and_error(
        fake: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    fake.responder = lambda body: {"content": "one two three"}
    client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="unused")
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    await stream.__anext__()
    await stream.close()

    async def failing() -> None:
        async with await client.chat.completions.create(
                model="m", messages=MESSAGES, stream=True) as failing_stream:
            async for _ in failing_stream:
                raise ValueError("consumer gave up")

    with pytest.raises(ValueError, match="consumer gave up"):
        await failing()
    await client.close()
    ends = [s.attributes.get(sc.PYTHIA_STREAM_END) for s in chat_spans(spans)]
    assert ends == ["closed", "closed"]


def test_genai_metrics_are_recorded(fake: FakeOpenAI) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    pythia.uninstrument()
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    pythia.instrument(tracer_provider=TracerProvider(), meter_provider=meters)
    client = openai.OpenAI(base_url=fake.base_url, api_key="unused")
    client.chat.completions.create(model="m", messages=MESSAGES)
    data = reader.get_metrics_data()
    metrics = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics
               for m in sm.metrics}
    assert set(metrics) == {sc.METRIC_OPERATION_DURATION, sc.METRIC_TOKEN_USAGE}
    usage = {dict(p.attributes)[sc.GEN_AI_TOKEN_TYPE]: p.sum
             for p in metrics[sc.METRIC_TOKEN_USAGE].data.data_points}
    assert usage["output"] == 2 and usage["input"] > 0
    (duration,) = metrics[sc.METRIC_OPERATION_DURATION].data.data_points
    assert duration.count == 1
    assert dict(duration.attributes)[sc.GEN_AI_OPERATION_NAME] == "chat"


def test_no_duplicate_span_with_the_official_instrumentation(fake: FakeOpenAI) -> None:
    """With opentelemetry-instrumentation-openai-v2 active (installed for the benchmark
    only, so this skips where it is absent), one chat span per call: theirs, tagged."""
    openai_v2 = pytest.importorskip("opentelemetry.instrumentation.openai_v2")
    pythia.uninstrument()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    official = openai_v2.OpenAIInstrumentor()
    official.instrument(tracer_provider=provider)
    try:
        pythia.instrument(tracer_provider=provider)
        client = openai.OpenAI(base_url=fake.base_url, api_key="unused")
        with pythia.workflow("wf", session="s"), pythia.agent("a"):
            client.chat.completions.create(model="m", messages=MESSAGES)
    finally:
        official.uninstrument()
        pythia.uninstrument()
    (chat,) = chat_spans(exporter)
    assert chat.instrumentation_scope.name != sc.SCOPE_NAME
    assert chat.attributes[sc.GEN_AI_AGENT_NAME] == "a"
    assert fake.model_calls()[0].headers["traceparent"].split("-")[2] == f"{chat.context.span_id:016x}"


def test_streaming_response_spans_end_with_the_body_and_carry_usage(
        fake: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    client = openai.OpenAI(base_url=fake.base_url, api_key="unused")
    chat = client.chat.completions.with_streaming_response
    with pythia.workflow("wf"), pythia.agent("a"):
        with chat.create(model="m", messages=MESSAGES) as response:
            assert chat_spans(spans) == []  # headers are in, the body is not read yet
            response.parse()
        with chat.create(model="m", messages=MESSAGES) as response:
            response.json()
        with chat.create(model="m", messages=MESSAGES, stream=True,
                         stream_options={"include_usage": True}) as response:
            lines = list(response.iter_lines())
        with client.responses.with_streaming_response.create(model="m", input="hi") as response:
            response.read()
        with chat.create(model="m", messages=MESSAGES) as response:
            pass  # never read: ends when closed, no usage
    assert any(line.startswith("data:") for line in lines)
    parsed, as_json, sse, responses_api, unread = chat_spans(spans)
    for span in (parsed, as_json, sse, responses_api):
        assert span.attributes[sc.PYTHIA_RAW_RESPONSE] is True
        assert span.attributes[sc.PYTHIA_STREAM_END] == "exhausted"
        assert span.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] > 0
        assert span.attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 2
    assert parsed.attributes[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert unread.attributes[sc.PYTHIA_STREAM_END] == "closed"
    assert sc.GEN_AI_USAGE_INPUT_TOKENS not in unread.attributes


async def test_async_streaming_response_carries_usage(
        fake: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="unused")
    async with client.chat.completions.with_streaming_response.create(
            model="m", messages=MESSAGES, stream=True,
            stream_options={"include_usage": True}) as response:
        async for _ in await response.parse():
            pass
    (span,) = chat_spans(spans)
    assert span.attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 2
    assert span.attributes[sc.PYTHIA_STREAM_END] == "exhausted"
