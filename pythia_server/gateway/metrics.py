"""The gateway's Prometheus metrics, on a registry of its own, with bounded label values.

Workflow label values are capped (the first ``max_workflows`` seen keep their name,
later ones are reported as ``other``); dropped-tag reasons map onto a fixed set.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from pythia_sdk.protocol import Problem

__all__ = ["CONTENT_TYPE_LATEST", "GatewayMetrics", "LabelCap", "problem_reason"]

UNTAGGED = "(untagged)"
OTHER = "other"

_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class LabelCap:
    """Maps free-form values onto at most ``limit`` label values plus ``other``."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str | None) -> str:
        if not value:
            return UNTAGGED
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) < self._limit:
                self._seen.add(value)
                return value
        return OTHER


def problem_reason(problem: Problem) -> str:
    """A dropped tag's reason as one of a fixed set of label values."""
    text = problem.reason
    if text.startswith("expected"):
        return "wrong_type"
    if text.startswith("empty"):
        return "empty"
    if text.startswith("longer"):
        return "too_long"
    if text.startswith("characters"):
        return "bad_charset"
    if text.startswith("unreadable"):
        return "unreadable"
    return "other"


class GatewayMetrics:
    """Counters and histograms the gateway updates once per call."""

    def __init__(self, max_workflows: int = 50) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.workflow_label = LabelCap(max_workflows)
        r = self.registry
        self.requests = Counter("pythia_requests", "LLM calls finished, by outcome.",
                                ["route", "workflow", "status"], registry=r)
        self.errors = Counter("pythia_errors", "Error responses sent, by error type.",
                              ["type"], registry=r)
        self.tokens = Counter("pythia_tokens", "Tokens of finished calls (prompt, cached, output).",
                              ["workflow", "kind"], registry=r)
        self.ttft = Histogram("pythia_ttft_seconds", "Time to first content chunk (streams).",
                              ["workflow"], buckets=_LATENCY_BUCKETS_S, registry=r)
        self.e2e = Histogram("pythia_e2e_seconds", "Gateway receive to last byte.",
                             ["workflow"], buckets=_LATENCY_BUCKETS_S, registry=r)
        self.queue = Histogram("pythia_queue_seconds", "Gateway receive to upstream send.",
                               ["workflow"], buckets=_LATENCY_BUCKETS_S, registry=r)
        self.dropped_tags = Counter("pythia_dropped_tags", "Malformed tags dropped (the call was served).",
                                    ["reason"], registry=r)
        self.retries = Counter("pythia_upstream_retries", "Calls retried on another replica.", registry=r)
        self.inflight = Gauge("pythia_inflight_requests", "Calls being served now.", registry=r)
        self.replicas_healthy = Gauge("pythia_replicas_healthy", "Replicas currently routable.", registry=r)

    def count_problems(self, problems: list[Problem]) -> None:
        for problem in problems:
            self.dropped_tags.labels(problem_reason(problem)).inc()

    def observe_call(self, *, route: str, workflow: str | None, status: str,
                     prompt_tokens: int | None, cached_tokens: int | None, output_tokens: int | None,
                     ttft_ms: float | None, e2e_ms: float | None, queue_ms: float | None) -> None:
        label = self.workflow_label(workflow)
        self.requests.labels(route, label, status).inc()
        if prompt_tokens:
            self.tokens.labels(label, "prompt").inc(prompt_tokens)
        if cached_tokens:
            self.tokens.labels(label, "cached").inc(cached_tokens)
        if output_tokens:
            self.tokens.labels(label, "output").inc(output_tokens)
        if ttft_ms is not None:
            self.ttft.labels(label).observe(ttft_ms / 1000.0)
        if e2e_ms is not None:
            self.e2e.labels(label).observe(e2e_ms / 1000.0)
        if queue_ms is not None:
            self.queue.labels(label).observe(queue_ms / 1000.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
