"""Model-call spans built off the call path (batch processors only): the spans that reach
the processors are the ones the call path announced in ``traceparent``, with the right
parent, times and attributes, and nothing is lost on flush or uninstrument."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

import pythia_sdk as pythia
from pythia_sdk import _semconv as sc
from pythia_sdk._instrumentor import REGISTRY
from tests.pythia_sdk.fake_openai import FakeOpenAI

MESSAGES = [{"role": "user", "content": "hello"}]


class Batched:
    """A provider whose only processor is a BatchSpanProcessor, recording in memory."""

    def __init__(self, **provider_options: Any) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(**provider_options)
        self.provider.add_span_processor(BatchSpanProcessor(self.exporter))

    def finished(self) -> list[Any]:
        self.provider.force_flush()
        return list(self.exporter.get_finished_spans())

    def chats(self) -> list[Any]:
        return [s for s in self.finished()
                if s.attributes.get(sc.GEN_AI_OPERATION_NAME) in ("chat", "text_completion")]


@pytest.fixture
def batched() -> Iterator[Batched]:
    pythia.uninstrument()
    recorder = Batched()
    yield recorder
    pythia.uninstrument()
    recorder.provider.shutdown()


def test_deferred_spans_match_traceparent_parent_and_times(
        fake: FakeOpenAI, batched: Batched) -> None:
    pythia.instrument(tracer_provider=batched.provider)
    assert REGISTRY.telemetry is not None and REGISTRY.telemetry.deferred is not None
    client = openai.OpenAI(base_url=fake.base_url, api_key="unused")
    before_ns = time.time_ns()
    with pythia.workflow("wf", session="s-1"), pythia.agent("planner"):
        client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=7)
        client.completions.create(model="m", prompt="hi")
    after_ns = time.time_ns()
    assert pythia.flush()
    spans = {s.attributes[sc.GEN_AI_OPERATION_NAME]: s for s in batched.finished()}
    chat, completion, agent = spans["chat"], spans["text_completion"], spans["invoke_agent"]
    for span, request in zip((chat, completion), fake.model_calls()):
        _, trace_id, span_id, flags = request.headers["traceparent"].split("-")
        assert (f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}") == \
            (trace_id, span_id)
        assert int(flags, 16) == int(span.context.trace_flags)
        assert span.parent.span_id == agent.context.span_id
        assert span.kind is SpanKind.CLIENT
        assert span.instrumentation_scope.name == sc.SCOPE_NAME
        assert span.resource is agent.resource
        assert before_ns <= span.start_time < span.end_time <= after_ns
        assert agent.start_time <= span.start_time and span.end_time <= agent.end_time
    assert chat.name == "chat m" and completion.name == "text_completion m"
    attrs = chat.attributes
    assert (attrs[sc.GEN_AI_CONVERSATION_ID], attrs[sc.GEN_AI_AGENT_NAME],
            attrs[sc.PYTHIA_WORKFLOW]) == ("s-1", "planner", "wf")
    assert attrs[sc.GEN_AI_REQUEST_MODEL] == "m" and attrs[sc.GEN_AI_REQUEST_MAX_TOKENS] == 7
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] > 0 and attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 2
    assert attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert attrs[sc.SERVER_ADDRESS] == "127.0.0.1"


def test_deferred_streams_errors_and_roots(fake: FakeOpenAI, batched: Batched) -> None:
    fake.responder = lambda body: {"content": "one two three"}
    pythia.instrument(tracer_provider=batched.provider)
    client = openai.OpenAI(base_url=fake.base_url, api_key="unused")
    for _ in client.chat.completions.create(model="m", messages=MESSAGES, stream=True):
        pass
    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    next(iter(stream))
    stream.close()
    broken = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.APIConnectionError):
        broken.chat.completions.create(model="m", messages=MESSAGES)
    pythia.flush()
    exhausted, closed, failed = batched.chats()
    assert exhausted.attributes[sc.PYTHIA_STREAM_END] == "exhausted"
    assert closed.attributes[sc.PYTHIA_STREAM_END] == "closed"
    assert exhausted.parent is None  # no scope and no current span: a new trace
    assert exhausted.context.trace_id != closed.context.trace_id
    assert failed.status.is_ok is False
    assert failed.attributes[sc.ERROR_TYPE] == "APIConnectionError"
    (event,) = failed.events
    assert event.name == "exception" and event.timestamp == failed.end_time


def test_unsampled_parent_means_no_span_but_a_traceparent(
        fake: FakeOpenAI, batched: Batched) -> None:
    pythia.instrument(tracer_provider=batched.provider)
    client = openai.OpenAI(base_url=fake.base_url, api_key="unused")
    parent = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(0))
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(parent)))
    try:
        client.chat.completions.create(model="m", messages=MESSAGES)
    finally:
        otel_context.detach(token)
    pythia.flush()
    assert batched.chats() == []
    _, trace_id, _, flags = fake.model_calls()[0].headers["traceparent"].split("-")
    assert (trace_id, flags) == (f"{0xABC:032x}", "00")


def test_uninstrument_drains_and_metrics_follow_flush(fake: FakeOpenAI, batched: Batched) -> None:
    reader = InMemoryMetricReader()
    pythia.instrument(tracer_provider=batched.provider,
                      meter_provider=MeterProvider(metric_readers=[reader]))
    client = openai.OpenAI(base_url=fake.base_url, api_key="unused")
    with pythia.workflow("wf"), pythia.agent("a"):
        for _ in range(3):
            client.chat.completions.create(model="m", messages=MESSAGES)
    pythia.flush()
    metrics = {m.name: m for rm in reader.get_metrics_data().resource_metrics
               for sm in rm.scope_metrics for m in sm.metrics}
    (duration,) = metrics[sc.METRIC_OPERATION_DURATION].data.data_points
    assert duration.count == 3 and duration.sum > 0
    with pythia.workflow("wf"), pythia.agent("a"):
        client.chat.completions.create(model="m", messages=MESSAGES)
    pythia.uninstrument()  # no flush: the queued record is still built
    assert len(batched.chats()) == 4


def test_when_spans_are_deferred(fake: FakeOpenAI) -> None:
    """Only behind batch processors, with the default sampler and content capture off."""
    def deferred(provider: TracerProvider, **options: Any) -> bool:
        pythia.uninstrument()
        pythia.instrument(tracer_provider=provider, **options)
        assert REGISTRY.telemetry is not None
        spans = REGISTRY.telemetry.deferred
        active = spans is not None and spans.active
        pythia.uninstrument()
        return active

    assert deferred(Batched().provider)
    assert not deferred(Batched().provider, capture_content=True)
    assert not deferred(Batched(sampler=TraceIdRatioBased(0.5)).provider)
    assert not deferred(TracerProvider())  # no processor: nothing to gain
    mixed = Batched()
    pythia.instrument(tracer_provider=mixed.provider)
    assert REGISTRY.telemetry is not None and REGISTRY.telemetry.deferred is not None
    assert REGISTRY.telemetry.deferred.active
    sync_exporter = InMemorySpanExporter()
    mixed.provider.add_span_processor(SimpleSpanProcessor(sync_exporter))  # added later
    assert not REGISTRY.telemetry.deferred.active
    openai.OpenAI(base_url=fake.base_url, api_key="unused").chat.completions.create(
        model="m", messages=MESSAGES)
    assert len(sync_exporter.get_finished_spans()) == 1  # inline, as before


def test_pooled_ids_name_the_spans_and_are_never_reused(fake: FakeOpenAI, batched: Batched) -> None:
    """Ids made ahead by the worker (roots take a pooled trace id too) are the spans' ids,
    each used once; a forked child drops its copy of the pools."""
    pythia.instrument(tracer_provider=batched.provider)
    assert REGISTRY.telemetry is not None
    spans = REGISTRY.telemetry.deferred
    assert spans is not None and spans._pooled
    spans._refill()
    pooled = {span_id for span_id, _ in spans._span_ids}
    client = openai.OpenAI(base_url=fake.base_url, api_key="unused")
    for _ in range(3):
        client.chat.completions.create(model="m", messages=MESSAGES)  # roots
    with pythia.workflow("wf", session="s-1"), pythia.agent("a"):
        for _ in range(3):
            client.chat.completions.create(model="m", messages=MESSAGES)
    pythia.flush()
    chats = batched.chats()
    sent = {r.headers["traceparent"] for r in fake.model_calls()}
    assert {f"00-{s.context.trace_id:032x}-{s.context.span_id:016x}-{s.context.trace_flags:02x}"
            for s in chats} == sent
    assert len(sent) == 6 and {s.context.span_id for s in chats} <= pooled
    assert len({s.context.trace_id for s in chats[:3]}) == 3
    used = {s.context.span_id for s in chats}
    assert not used & {span_id for span_id, _ in spans._span_ids}  # taken out when used

    import os

    assert spans._span_ids
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 only when its pools are empty
        os._exit(0 if not spans._span_ids and not spans._trace_ids else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
