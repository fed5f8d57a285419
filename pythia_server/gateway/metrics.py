"""The gateway's Prometheus metrics, on a registry of its own, with bounded label values.

Workflow label values are capped (the first ``max_workflows`` seen keep their name,
later ones are reported as ``other``); per-agent series are capped again by distinct
(workflow, agent) pairs (``max_agents``; later agents are ``other``); dropped-tag
reasons map onto a fixed set. The profiler's standing per workflow type (mode and the
accuracy it was judged on) is set by the gateway's profiler feed.
"""

from __future__ import annotations

import threading

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from pythia_sdk.protocol import Problem

__all__ = ["CONTENT_TYPE_LATEST", "AgentLabelCap", "GatewayMetrics", "LabelCap", "problem_reason"]

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


class AgentLabelCap:
    """Agent label values: at most ``limit`` distinct (workflow label, agent) pairs, then ``other``."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def __call__(self, workflow_label: str, agent: str | None) -> str:
        if not agent:
            return UNTAGGED
        key = (workflow_label, agent)
        if key in self._seen:
            return agent
        with self._lock:
            if len(self._seen) < self._limit:
                self._seen.add(key)
                return agent
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

    def __init__(self, max_workflows: int = 50, max_agents: int = 200) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.workflow_label = LabelCap(max_workflows)
        self.agent_label = AgentLabelCap(max_agents)
        r = self.registry
        self.requests = Counter("pythia_requests", "LLM calls finished, by outcome.",
                                ["route", "workflow", "status"], registry=r)
        self.errors = Counter("pythia_errors", "Error responses sent, by error type.",
                              ["type"], registry=r)
        self.tokens = Counter("pythia_tokens", "Tokens of finished calls (prompt, cached, output).",
                              ["workflow", "kind"], registry=r)
        self.ttft = Histogram("pythia_ttft_seconds", "Time to first content (non-streaming calls are streamed upstream).",
                              ["workflow"], buckets=_LATENCY_BUCKETS_S, registry=r)
        self.e2e = Histogram("pythia_e2e_seconds", "Gateway receive to last byte.",
                             ["workflow"], buckets=_LATENCY_BUCKETS_S, registry=r)
        self.queue = Histogram("pythia_queue_seconds", "Gateway receive to upstream send.",
                               ["workflow"], buckets=_LATENCY_BUCKETS_S, registry=r)
        self.dropped_tags = Counter("pythia_dropped_tags", "Malformed tags dropped (the call was served).",
                                    ["reason"], registry=r)
        self.retries = Counter("pythia_upstream_retries", "Calls retried on another replica.", registry=r)
        self.quarantines = Counter("pythia_replica_quarantines",
                                   "Replicas quarantined for hanging (upstream timeout) or answering garbage.",
                                   registry=r)
        self.inflight = Gauge("pythia_inflight_requests", "Calls being served now.", registry=r)
        self.replicas_healthy = Gauge("pythia_replicas_healthy", "Replicas currently routable.", registry=r)
        # Per agent (workflow x agent, capped).
        self.agent_requests = Counter("pythia_agent_requests", "LLM calls finished per agent, by outcome.",
                                      ["workflow", "agent", "status"], registry=r)
        self.agent_tokens = Counter("pythia_agent_tokens", "Tokens of finished calls per agent (prompt, cached, output).",
                                    ["workflow", "agent", "kind"], registry=r)
        self.agent_ttft = Histogram("pythia_agent_ttft_seconds", "Time to first content per agent.",
                                    ["workflow", "agent"], buckets=_LATENCY_BUCKETS_S, registry=r)
        self.agent_e2e = Histogram("pythia_agent_e2e_seconds", "Gateway receive to last byte per agent.",
                                   ["workflow", "agent"], buckets=_LATENCY_BUCKETS_S, registry=r)
        # The profiler's standing per workflow type.
        self.workflow_proactive = Gauge("pythia_workflow_proactive",
                                        "1 when the workflow type is proactive (predictions acted on), 0 in shadow.",
                                        ["workflow"], registry=r)
        self.workflow_top1 = Gauge("pythia_workflow_next_agent_top1",
                                   "Next-agent top-1 accuracy over the validation window.", ["workflow"], registry=r)
        self.workflow_coverage = Gauge("pythia_workflow_bound_coverage",
                                       "Share of calls whose output stayed under the predicted bound.",
                                       ["workflow"], registry=r)
        self.profiler_calls = Counter("pythia_profiler_calls",
                                      "Calls handed to the profiler, by outcome (observed, failed, dropped).",
                                      ["outcome"], registry=r)
        self.profiler_sessions_ended = Counter("pythia_profiler_sessions_ended",
                                               "Sessions the profiler learned, by how they ended (span, idle).",
                                               ["reason"], registry=r)
        self.profiler_live_sessions = Gauge("pythia_profiler_live_sessions",
                                            "Sessions the profiler is following now.", registry=r)

    def count_problems(self, problems: list[Problem]) -> None:
        for problem in problems:
            self.dropped_tags.labels(problem_reason(problem)).inc()

    def observe_call(self, *, route: str, workflow: str | None, status: str,
                     prompt_tokens: int | None, cached_tokens: int | None, output_tokens: int | None,
                     ttft_ms: float | None, e2e_ms: float | None, queue_ms: float | None,
                     agent: str | None = None) -> None:
        label = self.workflow_label(workflow)
        agent_label = self.agent_label(label, agent)
        self.requests.labels(route, label, status).inc()
        self.agent_requests.labels(label, agent_label, status).inc()
        for kind, count in (("prompt", prompt_tokens), ("cached", cached_tokens), ("output", output_tokens)):
            if count:
                self.tokens.labels(label, kind).inc(count)
                self.agent_tokens.labels(label, agent_label, kind).inc(count)
        if ttft_ms is not None:
            self.ttft.labels(label).observe(ttft_ms / 1000.0)
            self.agent_ttft.labels(label, agent_label).observe(ttft_ms / 1000.0)
        if e2e_ms is not None:
            self.e2e.labels(label).observe(e2e_ms / 1000.0)
            self.agent_e2e.labels(label, agent_label).observe(e2e_ms / 1000.0)
        if queue_ms is not None:
            self.queue.labels(label).observe(queue_ms / 1000.0)

    def set_workflow_standing(self, workflow: str, mode: str, next_agent_top1: float | None = None,
                              bound_coverage: float | None = None) -> None:
        """The profiler's mode (and, when known, its accuracy) for one workflow type."""
        label = self.workflow_label(workflow)
        if label == OTHER:
            return  # one gauge cannot stand for many workflow types
        self.workflow_proactive.labels(label).set(1.0 if mode == "proactive" else 0.0)
        if next_agent_top1 is not None:
            self.workflow_top1.labels(label).set(next_agent_top1)
        if bound_coverage is not None:
            self.workflow_coverage.labels(label).set(bound_coverage)

    def render(self) -> bytes:
        return generate_latest(self.registry)
