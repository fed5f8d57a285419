"""Telemetry's call-path helpers: whether metrics record anywhere, and the current span."""

from __future__ import annotations

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NoOpTracerProvider

from pythia_sdk._config import Settings
from pythia_sdk._spans import Telemetry, current_span_reader


def test_metrics_live_only_with_a_recording_meter_provider() -> None:
    off = Settings(export_traces=False)
    assert Telemetry(off, NoOpTracerProvider(), MeterProvider()).metrics_live()
    assert not Telemetry(off, NoOpTracerProvider(), metrics.NoOpMeterProvider()).metrics_live()
    # the API's proxy: nothing in this test suite sets a global meter provider
    assert not Telemetry(off, NoOpTracerProvider()).metrics_live()


def test_current_span_reader_agrees_with_the_api() -> None:
    current = current_span_reader()
    assert current() is trace.get_current_span() is trace.INVALID_SPAN
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("outer") as outer:
        assert current() is outer
        with tracer.start_as_current_span("inner") as inner:
            assert current() is inner is trace.get_current_span()
        assert current() is outer
    assert current() is trace.INVALID_SPAN
