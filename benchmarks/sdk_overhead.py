"""Per-call overhead of the SDK on ``chat.completions.create``, on a mock transport.

    /work/venv/bin/python benchmarks/sdk_overhead.py [--calls 100] [--rounds 40] [--json out.json]

No network: the openai client sends through ``MockTransport`` (httpx2 on openai 3.x,
httpx before), which answers a canned completion. In one process, rounds alternate:

* ``uninstrumented``: the plain client;
* ``pythia tags only``: ``pythia.instrument()`` with span export off (headers merged);
* ``pythia``: tags plus a ``chat`` span and both GenAI histograms, spans going to a
  ``BatchSpanProcessor`` with a discarding exporter (what the default export costs on the
  calling thread);
* ``otel openai-v2``: ``opentelemetry-instrumentation-openai-v2`` with the same provider,
  when installed (it is not a Pythia dependency).

Each call runs inside ``pythia.workflow`` / ``pythia.agent`` scopes for every row, so
only the instrumentation differs. Time per call is this process's CPU time by default
(``--clock wall`` for elapsed time): on a shared machine, waiting for a core is noise,
and the batch exporter's thread is still counted. The table gives the median over rounds
of each round's p50 and p90 per call, and the p50 added over the uninstrumented client.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import openai

import pythia_sdk as pythia

BODY = json.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
}).encode()
MESSAGES = [{"role": "system", "content": "You are the planner."},
            {"role": "user", "content": "Plan a study of solar storage."}]


def make_client() -> openai.OpenAI:
    try:
        import httpx2 as httpx_mod  # openai 3.x
    except ImportError:  # openai 1.x / 2.x
        import httpx as httpx_mod

    def handler(request: Any) -> Any:
        return httpx_mod.Response(200, content=BODY, headers={"content-type": "application/json"})

    http_client = httpx_mod.Client(transport=httpx_mod.MockTransport(handler))
    return openai.OpenAI(base_url="http://gateway.invalid/v1", api_key="unused",
                         http_client=http_client, max_retries=0)


def time_calls(client: openai.OpenAI, calls: int, clock: Callable[[], int]) -> list[float]:
    """Microseconds per call, inside the same pythia scopes for every configuration."""
    create = client.chat.completions.create
    out: list[float] = []
    with pythia.workflow("bench", session="bench-1"), pythia.agent("planner"):
        for _ in range(10):  # warm-up
            create(model="m", messages=MESSAGES)
        for _ in range(calls):
            start = clock()
            create(model="m", messages=MESSAGES)
            out.append((clock() - start) / 1000)
    return out


class _Discard:
    """A span exporter that drops everything (the export cost is off-thread anyway)."""

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def _provider() -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Discard()))  # type: ignore[arg-type]
    return provider


class Config:
    """One row of the table: a client, and what to switch on around its blocks."""

    def __init__(self, client: openai.OpenAI, on: Callable[[], None] = lambda: None,
                 off: Callable[[], None] = lambda: None) -> None:
        self.client, self.on, self.off = client, on, off


def configurations() -> dict[str, Config]:
    """Pythia instruments single clients (so its rows can be interleaved with the plain
    client); the official instrumentation patches classes, so it is switched on and off
    around each of its blocks."""
    from opentelemetry.trace import NoOpTracerProvider

    from pythia_sdk._config import Settings
    from pythia_sdk._spans import Telemetry
    from pythia_sdk.integrations.openai import instrument_client

    tags_only = make_client()
    instrument_client(tags_only, Telemetry(Settings(export_traces=False), NoOpTracerProvider()))
    full = make_client()
    instrument_client(full, Telemetry(Settings(), _provider()))
    configs = {
        "uninstrumented": Config(make_client()),
        "uninstrumented (2nd client: noise floor)": Config(make_client()),
        "pythia tags only": Config(tags_only),
        "pythia (tags + span + metrics)": Config(full),
    }
    try:
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    except ImportError:
        return configs
    provider = _provider()
    configs["otel openai-v2"] = Config(
        make_client(),
        on=lambda: OpenAIInstrumentor().instrument(tracer_provider=provider),
        off=lambda: OpenAIInstrumentor().uninstrument(),
    )
    return configs


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


CLOCKS: dict[str, Callable[[], int]] = {
    "cpu": time.process_time_ns,  # this process's CPU time: steady on a shared machine
    "wall": time.perf_counter_ns,
}


def run(calls: int, rounds: int, clock: str = "cpu") -> dict[str, dict[str, float]]:
    """Blocks of ``calls`` per configuration, cycled ``rounds`` times in a shuffled order
    (load drifts on a shared machine; cycling spreads it evenly over the rows)."""
    configs = configurations()
    p50s: dict[str, list[float]] = {name: [] for name in configs}
    p90s: dict[str, list[float]] = {name: [] for name in configs}
    order = list(configs)
    shuffle = random.Random(0).shuffle
    for _ in range(rounds):
        shuffle(order)  # no row always follows another's set-up
        for name in order:
            config = configs[name]
            config.on()
            try:
                samples = time_calls(config.client, calls, CLOCKS[clock])
            finally:
                config.off()
            p50s[name].append(percentile(samples, 0.5))
            p90s[name].append(percentile(samples, 0.9))
    base = statistics.median(p50s["uninstrumented"])
    return {
        name: {"p50_us": statistics.median(p50s[name]), "p90_us": statistics.median(p90s[name]),
               "added_p50_us": statistics.median(p50s[name]) - base}
        for name in configs
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100, help="timed calls per block")
    parser.add_argument("--rounds", type=int, default=40, help="cycles over the rows")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                        help="cpu: process CPU time per call (default); wall: elapsed time")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    results = run(args.calls, args.rounds, args.clock)
    print(f"openai {openai.__version__}, python {sys.version.split()[0]}, "
          f"{args.calls} calls x {args.rounds} rounds, {args.clock} clock")
    print(f"{'configuration':42} {'p50 us':>9} {'p90 us':>9} {'added p50 us':>13}")
    for name, row in results.items():
        print(f"{name:42} {row['p50_us']:9.1f} {row['p90_us']:9.1f} {row['added_p50_us']:13.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"openai": openai.__version__, "calls": args.calls, "rounds": args.rounds,
                       "clock": args.clock,
                       "results": results}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
