"""The simulated server's /metrics and /v1/loads, with SGLang's names and shapes.

Metric names follow ``python/sglang/srt/metrics/collector.py`` (``sglang:num_running_reqs``,
``sglang:num_queue_reqs``, ``sglang:num_used_tokens``, ``sglang:token_usage``,
``sglang:cache_hit_rate``, ``sglang:gen_throughput``, counters ``sglang:prompt_tokens_total``,
``sglang:generation_tokens_total``, ``sglang:cached_tokens_total``,
``sglang:num_requests_total``, histograms ``sglang:time_to_first_token_seconds``,
``sglang:e2e_request_latency_seconds``). ``/v1/loads`` follows
``entrypoints/v1_loads.py`` and ``LoadSnapshot`` in ``managers/load_snapshot.py``.
Latencies are in engine seconds (simulated GPU time; equal to wall time at speedup 1).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pythia_server.engine.types import EngineLoad, FinishedRequest, StepResult

__all__ = ["SGLANG_VERSION", "SimMetrics", "loads_body"]

SGLANG_VERSION = "0.5.23"  # the SGLang release whose HTTP API the simulator speaks
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, float("inf"))
_THROUGHPUT_WINDOW_S = 5.0


class SimMetrics(Collector):
    """Gauges read from the engine at scrape time; latency histograms observed per request."""

    def __init__(self, model_name: str, load: Any) -> None:
        self._load = load  # () -> EngineLoad
        self._labels = {"model_name": model_name, "engine_type": "unified", "tp_rank": "0", "pp_rank": "0"}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        names = ["model_name"]
        self._ttft = Histogram(
            "sglang:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
            names, registry=self.registry, buckets=_LATENCY_BUCKETS,
        ).labels(model_name)
        self._e2e = Histogram(
            "sglang:e2e_request_latency_seconds", "Histogram of End-to-end request latency in seconds",
            names, registry=self.registry, buckets=_LATENCY_BUCKETS,
        ).labels(model_name)
        self._recent: deque[tuple[float, int]] = deque()  # (step end, tokens generated)

    def on_step(self, result: StepResult) -> None:
        self._recent.append((result.end_s, len(result.deltas)))
        while self._recent and self._recent[0][0] < result.end_s - _THROUGHPUT_WINDOW_S:
            self._recent.popleft()
        for finished in result.finished:
            self.on_finish(finished)

    def on_finish(self, finished: FinishedRequest) -> None:
        if finished.first_token_s is not None:
            self._ttft.observe(finished.first_token_s - finished.arrival_s)
        self._e2e.observe(finished.finish_s - finished.arrival_s)

    def gen_throughput(self, now_s: float) -> float:
        recent = [(t, n) for t, n in self._recent if t >= now_s - _THROUGHPUT_WINDOW_S]
        return sum(n for _, n in recent) / _THROUGHPUT_WINDOW_S if recent else 0.0

    def collect(self) -> Iterator[Metric]:
        load: EngineLoad = self._load()
        keys, values = list(self._labels), list(self._labels.values())

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=keys)
            family.add_metric(values, value)
            return family

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=keys)
            family.add_metric(values, value)
            return family

        now_s = self._recent[-1][0] if self._recent else 0.0
        yield gauge("sglang:num_running_reqs", "The number of running requests.", load.num_running_reqs)
        yield gauge("sglang:num_queue_reqs", "The number of requests in the waiting queue.", load.num_waiting_reqs)
        yield gauge("sglang:num_used_tokens", "The number of used tokens.", load.num_used_tokens)
        yield gauge("sglang:token_usage", "The token usage.", load.token_usage)
        yield gauge("sglang:cache_hit_rate", "The prefix cache hit rate.", load.cache_hit_rate)
        yield gauge("sglang:gen_throughput", "The generation throughput (token/s).", self.gen_throughput(now_s))
        yield gauge("sglang:max_total_num_tokens", "Maximum total number of tokens in the KV cache.",
                    load.max_total_num_tokens)
        yield gauge("sglang:num_retracted_reqs", "The number of retracted requests.", load.retractions_total)
        yield counter("sglang:prompt_tokens", "Number of prefill tokens processed.", load.prompt_tokens_total)
        yield counter("sglang:generation_tokens", "Number of generation tokens processed.",
                      load.generation_tokens_total)
        yield counter("sglang:cached_tokens", "Number of cached prompt tokens.", load.cached_tokens_total)
        yield counter("sglang:num_requests", "Number of requests processed.", load.requests_total)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def loads_body(
    load: EngineLoad, gen_throughput: float, kv_cache_gb: float, weight_gb: float, accelerator: str | None
) -> dict[str, Any]:
    """GET /v1/loads: one DP rank (the simulator models one) on one accelerator.

    Every key of SGLang's ``LoadSnapshot.to_dict()`` (``managers/load_snapshot.py``), no
    other: fields the simulator does not model (prefill-busy counters, decode moments,
    disaggregation) carry SGLang's defaults.
    """
    utilization = max(load.token_usage, load.num_running_reqs / max(load.max_running_requests, 1))
    total_tokens = load.num_used_tokens + load.waiting_tokens
    rank = {
        "timestamp": time.time(),
        "dp_rank": 0,
        "num_running_reqs": load.num_running_reqs,
        "num_waiting_reqs": load.num_waiting_reqs,
        "num_waiting_uncached_tokens": load.waiting_tokens,
        "num_used_tokens": load.num_used_tokens,
        "num_total_tokens": total_tokens,
        "num_active_tokens": total_tokens,  # equal to num_total_tokens outside disaggregated decode
        "num_prealloc_ready_tokens": 0,
        "max_total_num_tokens": load.max_total_num_tokens,
        "max_running_requests": load.max_running_requests,
        "token_usage": round(load.token_usage, 4),
        "gen_throughput": round(gen_throughput, 2),
        "cache_hit_rate": round(load.cache_hit_rate, 4),
        "utilization": round(utilization, 4),
        "total_prefill_uncached_tokens": load.prompt_tokens_total - load.cached_tokens_total,
        "total_prefill_busy_us": 0,
        "decode_moments": None,
        "memory": {
            "weight_gb": weight_gb,
            "kv_cache_gb": kv_cache_gb,
            "graph_gb": 0.0,
            "token_capacity": load.max_total_num_tokens,
        },
        "queues": {"waiting": load.num_waiting_reqs, "grammar": 0, "paused": 0, "retracted": 0, "prealloc_ready": 0},
    }
    return {
        "timestamp": datetime.now(UTC).isoformat(),
        "version": SGLANG_VERSION,
        "accelerator": accelerator,
        "num_accelerators": 1,
        "loads": [rank],
    }
