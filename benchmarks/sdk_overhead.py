"""Per-call overhead of the SDK on ``chat.completions.create``, on a mock transport.

    /work/venv/bin/python benchmarks/sdk_overhead.py [--calls 25] [--rounds 120] [--processes 5]
        [--json out.json]

No network: the openai client sends through ``MockTransport`` (httpx2 on openai 3.x,
httpx before), which answers a canned completion. In one process, blocks of calls
alternate between the rows:

* ``uninstrumented``: the plain client (twice: the second shows the noise floor);
* ``pythia tags only``: the SDK with span export off (tags merged into the headers);
* ``pythia (tags + span + metrics)``: the SDK as normally configured: a ``chat`` span per
  call into a ``BatchSpanProcessor`` with the OTLP/HTTP exporter, and both GenAI
  histograms into an SDK ``MeterProvider`` with a periodic reader;
* ``otel openai-v2``: ``opentelemetry-instrumentation-openai-v2`` with its own provider
  and meter provider of the same kinds, when installed (it is not a Pythia dependency).

The OTLP exporters post to a sink in another process (so only the encoding and sending
are this process's work). Each call runs inside ``pythia.workflow`` / ``pythia.agent``
scopes for every row, so only the instrumentation differs.

Two phases. The call path (p50, p90 per call): short blocks of calls, the rows
interleaved in a shuffled order each round, timed on the calling thread's CPU clock by
default (``--clock thread``; ``cpu`` for the whole process, ``wall`` for elapsed time):
steady on a shared machine where waiting for a core is noise; background threads run as
they would. The total (CPU us per call): blocks of 500 calls per row, 7 rounds, the whole
process's CPU time including the row's flush at the end (Pythia's span worker and the
batch exporter's encoding and sending included). Each process gives the median over
rounds; the table gives the median over ``--processes`` fresh interpreters (run one after
another; an instrumented row's p50 moves by several microseconds with each process's
memory layout), what each row adds over the uninstrumented client, and the spread of the
added p50 over the processes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
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


def time_calls(config: Config, calls: int, clock: Callable[[], int]) -> list[float]:
    """Microseconds per call on ``clock``, inside the same pythia scopes for every row."""
    create = config.client.chat.completions.create
    out: list[float] = []
    with pythia.workflow("bench", session="bench-1"), pythia.agent("planner"):
        for _ in range(10):  # warm-up
            create(model="m", messages=MESSAGES)
        for _ in range(calls):
            start = clock()
            create(model="m", messages=MESSAGES)
            out.append((clock() - start) / 1000)
    return out


def cpu_per_call(config: Config, calls: int) -> float:
    """The whole process's CPU microseconds per call over ``calls`` calls and the row's
    flush at the end: everything the instrumentation costs, background threads included."""
    create = config.client.chat.completions.create
    with pythia.workflow("bench", session="bench-1"), pythia.agent("planner"):
        for _ in range(10):
            create(model="m", messages=MESSAGES)
        config.flush()
        start = time.process_time_ns()
        for _ in range(calls):
            create(model="m", messages=MESSAGES)
        config.flush()
        return (time.process_time_ns() - start) / 1000 / calls


SINK = """
import http.server, sys
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Sink)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def start_sink() -> tuple[subprocess.Popen[str], str]:
    """An OTLP/HTTP endpoint in another process that accepts and drops every export (so
    its work is not this process's CPU time; the encoding and sending are)."""
    proc = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}/v1/traces"


def _telemetry_providers(endpoint: str) -> tuple[Any, Any]:
    """What a user configures: spans to a BatchSpanProcessor with the OTLP/HTTP exporter,
    metrics to a periodic reader (exporting every 60 s, into a discarding exporter)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        MetricExporter,
        MetricExportResult,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    class DiscardMetrics(MetricExporter):
        def export(self, metrics_data: Any, timeout_millis: float = 10_000,
                   **kwargs: Any) -> MetricExportResult:
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            pass

    tracer_provider = TracerProvider()
    # a queue long enough that no row drops spans (a dropped span is work not done)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint),
                                                          max_queue_size=1 << 16))
    meter_provider = MeterProvider(metric_readers=[PeriodicExportingMetricReader(
        DiscardMetrics(), export_interval_millis=60_000)])
    _SHUTDOWN.extend([tracer_provider.shutdown, meter_provider.shutdown])
    return tracer_provider, meter_provider


#: Run before the sink stops, in order: drain Pythia's deferred spans, export the rest.
_SHUTDOWN: list[Callable[[], Any]] = []


class Config:
    """One row of the table: a client, what to switch on around its blocks, and how to
    finish its background work (build and export its spans; metrics are exported by their
    periodic reader, every 60 s, as configured)."""

    def __init__(self, client: openai.OpenAI, on: Callable[[], None] = lambda: None,
                 off: Callable[[], None] = lambda: None,
                 flush: Callable[[], Any] = lambda: None) -> None:
        self.client, self.on, self.off, self.flush = client, on, off, flush


def configurations(endpoint: str) -> dict[str, Config]:
    """Pythia instruments single clients (so its rows can be interleaved with the plain
    client); the official instrumentation patches classes, so it is switched on and off
    around each of its blocks. Both get the same kind of tracer and meter providers."""
    from opentelemetry.trace import NoOpTracerProvider

    from pythia_sdk._config import Settings
    from pythia_sdk._spans import Telemetry
    from pythia_sdk.integrations.openai import instrument_client

    tags_only = make_client()
    instrument_client(tags_only, Telemetry(Settings(export_traces=False), NoOpTracerProvider()))
    full = make_client()
    tracer_provider, meter_provider = _telemetry_providers(endpoint)
    telemetry = Telemetry(Settings(), tracer_provider, meter_provider)
    _SHUTDOWN.insert(0, telemetry.shutdown)
    instrument_client(full, telemetry)
    configs = {
        "uninstrumented": Config(make_client()),
        "uninstrumented (2nd client: noise floor)": Config(make_client()),
        "pythia tags only": Config(tags_only),
        "pythia (tags + span + metrics)": Config(
            full, flush=telemetry.flush),
    }
    try:
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    except ImportError:
        return configs
    tracer_provider, meter_provider = _telemetry_providers(endpoint)  # its own pair
    configs["otel openai-v2"] = Config(
        make_client(),
        on=lambda: OpenAIInstrumentor().instrument(tracer_provider=tracer_provider,
                                                   meter_provider=meter_provider),
        off=lambda: OpenAIInstrumentor().uninstrument(),
        flush=tracer_provider.force_flush,
    )
    return configs


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


CLOCKS: dict[str, Callable[[], int]] = {
    "thread": time.thread_time_ns,  # the calling thread's CPU time: the call path alone
    "cpu": time.process_time_ns,  # all of this process's threads
    "wall": time.perf_counter_ns,
}


def run(calls: int, rounds: int, clock: str = "cpu") -> dict[str, dict[str, float]]:
    """Blocks of ``calls`` per configuration, cycled ``rounds`` times in a shuffled order
    (load drifts on a shared machine; cycling spreads it evenly over the rows)."""
    sink, endpoint = start_sink()
    try:
        return _run(configurations(endpoint), calls, rounds, clock)
    finally:
        for shutdown in _SHUTDOWN:
            shutdown()
        sink.terminate()
        sink.wait()


def _run(configs: dict[str, Config], calls: int, rounds: int,
         clock: str) -> dict[str, dict[str, float]]:
    p50s: dict[str, list[float]] = {name: [] for name in configs}
    p90s: dict[str, list[float]] = {name: [] for name in configs}
    cpus: dict[str, list[float]] = {name: [] for name in configs}
    order = list(configs)
    shuffle = random.Random(0).shuffle
    for _ in range(rounds):  # the call path: short blocks, no flushing
        shuffle(order)  # no row always follows another's set-up
        for name in order:
            with switched_on(configs[name]) as config:
                samples = time_calls(config, calls, CLOCKS[clock])
            p50s[name].append(percentile(samples, 0.5))
            p90s[name].append(percentile(samples, 0.9))
    for _ in range(COST_ROUNDS):  # the total: long blocks, each flushed at its end
        shuffle(order)
        for name in order:
            with switched_on(configs[name]) as config:
                cpus[name].append(cpu_per_call(config, COST_CALLS))
    base = statistics.median(p50s["uninstrumented"])
    base_cpu = statistics.median(cpus["uninstrumented"])
    return {
        name: {"p50_us": statistics.median(p50s[name]), "p90_us": statistics.median(p90s[name]),
               "added_p50_us": statistics.median(p50s[name]) - base,
               "cpu_us": statistics.median(cpus[name]),
               "added_cpu_us": statistics.median(cpus[name]) - base_cpu}
        for name in configs
    }


#: The total-cost phase: rounds over the rows, calls per block.
COST_ROUNDS = 7
COST_CALLS = 500


@contextlib.contextmanager
def switched_on(config: Config) -> Iterator[Config]:
    config.on()
    try:
        yield config
    finally:
        config.off()


def across_processes(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per row, the median over processes of each figure, and the spread of added p50."""
    out: dict[str, dict[str, float]] = {}
    for name in runs[0]:
        row = {key: statistics.median(run[name][key] for run in runs) for key in runs[0][name]}
        added = [run[name]["added_p50_us"] for run in runs]
        row["added_p50_min_us"], row["added_p50_max_us"] = min(added), max(added)
        out[name] = row
    return out


def run_processes(processes: int, calls: int, rounds: int,
                  clock: str) -> list[dict[str, dict[str, float]]]:
    """One run per fresh interpreter, one after another. Why: each process lays out its
    code and objects differently (addresses, string hashes), which moves an instrumented
    row's p50 by several microseconds from one process to the next while the noise-floor
    row stays put; the median over processes is the figure that does not depend on it."""
    runs = []
    for _ in range(processes):
        done = subprocess.run(
            [sys.executable, __file__, "--child", "--calls", str(calls), "--rounds", str(rounds),
             "--clock", clock], check=True, capture_output=True, text=True)
        runs.append(json.loads(done.stdout.splitlines()[-1]))
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=25, help="timed calls per block")
    parser.add_argument("--rounds", type=int, default=120, help="cycles over the rows")
    parser.add_argument("--processes", type=int, default=5,
                        help="fresh interpreters, run one after another (figures: the median "
                             "over them; 1: this process only)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="thread",
                        help="per-call clock: thread (default): the calling thread's CPU "
                             "time; cpu: the whole process's; wall: elapsed time")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run(args.calls, args.rounds, args.clock)))
        return 0
    if args.processes > 1:
        runs = run_processes(args.processes, args.calls, args.rounds, args.clock)
        results = across_processes(runs)
    else:
        runs = [run(args.calls, args.rounds, args.clock)]
        results = across_processes(runs)
    print(f"openai {openai.__version__}, python {sys.version.split()[0]}, "
          f"{args.calls} calls x {args.rounds} rounds x {len(runs)} processes, {args.clock} clock")
    print(f"{'configuration':42} {'p50 us':>9} {'p90 us':>9} {'added p50 us':>13} "
          f"{'(min..max)':>15} {'CPU us':>9} {'added CPU us':>13}")
    for name, row in results.items():
        spread = f"{row['added_p50_min_us']:.1f}..{row['added_p50_max_us']:.1f}"
        print(f"{name:42} {row['p50_us']:9.1f} {row['p90_us']:9.1f} {row['added_p50_us']:13.1f} "
              f"{spread:>15} {row['cpu_us']:9.1f} {row['added_cpu_us']:13.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"openai": openai.__version__, "calls": args.calls, "rounds": args.rounds,
                       "processes": len(runs), "clock": args.clock,
                       "results": results, "per_process": runs}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
