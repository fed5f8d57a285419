from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import pythia_sdk as pythia
from tests.pythia_sdk.fake_openai import FakeOpenAI, ServerThread, start_fake_openai


@pytest.fixture(scope="session")
def _fake_server() -> Iterator[tuple[FakeOpenAI, ServerThread]]:
    fake, thread = start_fake_openai()
    yield fake, thread
    thread.stop()


@pytest.fixture
def fake(_fake_server: tuple[FakeOpenAI, ServerThread]) -> Iterator[FakeOpenAI]:
    server, _ = _fake_server
    server.clear()
    yield server
    server.clear()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """A tracer provider recording in memory; pythia is reset around each test."""
    pythia.uninstrument()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    pythia.instrument(tracer_provider=provider)
    yield exporter
    pythia.uninstrument()
    provider.shutdown()


@pytest.fixture(autouse=True)
def _reset_pythia() -> Iterator[None]:
    """No instrumentation outlives its test."""
    yield
    pythia.uninstrument()
