"""Profiler speed: learning time for N sessions and predict latency (p50 / p99).

Sessions are copies of a workload's sessions under fresh session ids (default: the
ChatDev file converted on the fly, else a synthetic planner / fan-out / review loop),
fed through the public facade exactly as a driver does: ``observe`` for every call,
``end_session`` at the end. Predict latency is timed per call on live sessions with
``time.perf_counter_ns`` around single calls (no batching). Learning is timed ``--repeat``
times on a fresh profiler (the machine is shared: the best wall and CPU times are
reported, each run's too). Prints a table and writes JSON (``--out``, default
benchmarks/results/profiler_bench.json).

    python benchmarks/profiler_bench.py [--sessions 10000] [--repeat 3] [--workload FILE] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

from pythia_server.profiler.profiler import WorkflowProfiler
from pythia_server.profiler.types import CallObservation

REPO = Path(__file__).resolve().parents[1]


def _synthetic_sessions(count: int, seed: int = 7) -> list[list[CallObservation]]:
    """planner -> N searchers in parallel -> writer <-> reviewer loop (1-3) -> end."""
    rng = random.Random(seed)
    sessions = []
    role = tuple(range(1, 9))
    for s in range(count):
        calls: list[CallObservation] = []
        t = 0.0

        def call(agent: str, start: float, out: int, hist: tuple[int, ...], s: int = s,
                 calls: list[CallObservation] = calls) -> CallObservation:
            return CallObservation("research", f"s{s}", agent, start, start + out / 50, 400, out,
                                   call_id=f"s{s}-{len(calls)}", block_hashes=role + hist, block_size=64)

        calls.append(call("planner", t, rng.randint(100, 300), (s * 100 + 1,)))
        t = calls[-1].end_s + 0.5
        for i in range(rng.randint(2, 5)):
            calls.append(call("searcher", t + 0.01 * i, rng.randint(200, 800), (s * 100 + 2,)))
        t = max(c.end_s for c in calls) + 0.5
        for _ in range(rng.randint(1, 3)):
            calls.append(call("writer", t, rng.randint(500, 1500), (s * 100 + 3,)))
            t = calls[-1].end_s + 0.2
            calls.append(call("reviewer", t, rng.randint(50, 300), (s * 100 + 4,)))
            t = calls[-1].end_s + 0.2
        sessions.append(calls)
    return sessions


def _workload_sessions(path: Path) -> list[list[CallObservation]]:
    from pythia_server.profiler.command import observations_from_workload
    from pythia_server.replay.workload import load_workload

    grouped = observations_from_workload(load_workload(path))
    return [sorted(calls, key=lambda c: (c.end_s, c.start_s)) for calls in grouped.values()]


def _chatdev_sessions() -> list[list[CallObservation]] | None:
    raw = REPO.parent / "shared" / "workloads" / "chatdev_calls.jsonl"
    if not raw.exists():
        return None
    from pythia_server.profiler.command import observations_from_workload
    from pythia_server.replay.converters.chatdev import convert_chatdev, read_chatdev

    grouped = observations_from_workload(convert_chatdev(read_chatdev(raw)))
    return [sorted(calls, key=lambda c: (c.end_s, c.start_s)) for calls in grouped.values()]


def _copies(base: list[list[CallObservation]], count: int) -> list[list[CallObservation]]:
    out = []
    for i in range(count):
        template = base[i % len(base)]
        out.append([_renamed(c, f"{c.session}~{i}") for c in template])
    return out


def _renamed(call: CallObservation, session: str) -> CallObservation:
    from dataclasses import replace

    return replace(call, session=session, call_id=f"{session}/{call.call_id}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--workload", type=Path, default=None)
    parser.add_argument("--synthetic", action="store_true", help="use the synthetic fan-out workflow")
    parser.add_argument("--predictions", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3, help="learning runs (fresh profiler each); best is reported")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "profiler_bench.json")
    args = parser.parse_args(argv)

    if args.workload is not None:
        base, source = _workload_sessions(args.workload), str(args.workload)
    elif not args.synthetic and (chatdev := _chatdev_sessions()) is not None:
        base, source = chatdev, "chatdev (converted)"
    else:
        base, source = _synthetic_sessions(200), "synthetic research fan-out"
    sessions = _copies(base, args.sessions)
    calls = sum(len(s) for s in sessions)

    load_before = os.getloadavg()[0]
    runs: list[tuple[float, float]] = []
    for _ in range(max(1, args.repeat)):
        profiler = WorkflowProfiler()
        started, started_cpu = time.perf_counter(), time.process_time()
        for session in sessions:
            for call in session:
                profiler.observe(call)
            profiler.end_session(session[0].workflow, session[0].session, session[-1].end_s)
        runs.append((time.perf_counter() - started, time.process_time() - started_cpu))
    learn_s = min(wall for wall, _ in runs)
    learn_cpu_s = min(cpu for _, cpu in runs)

    # Predict latency on live sessions: half of each probe session observed, then ask.
    rng = random.Random(1)
    probes = _copies(base, 200)
    for i, session in enumerate(probes):
        for call in session[: max(1, len(session) // 2)]:
            profiler.observe(_renamed(call, f"probe{i}"))
    latencies_ns: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(args.predictions):
        i = rng.randrange(len(probes))
        session = probes[i]
        workflow, name = session[0].workflow, f"probe{i}"
        agent = session[len(session) // 2].agent if rng.random() < 0.5 else None
        t0 = clock()
        profiler.predict(workflow, name, agent, 0.0)
        latencies_ns.append(clock() - t0)
    latencies_ns.sort()
    p50_us = latencies_ns[len(latencies_ns) // 2] / 1000
    p99_us = latencies_ns[int(len(latencies_ns) * 0.99)] / 1000
    result = {
        "source": source,
        "sessions": args.sessions,
        "calls": calls,
        "learn_s": round(learn_s, 3),
        "learn_cpu_s": round(learn_cpu_s, 3),
        "load_average_1m": round(load_before, 2),  # other processes on the machine skew wall times
        "learn_runs_wall_cpu_s": [[round(wall, 3), round(cpu, 3)] for wall, cpu in runs],
        "learn_us_per_call": round(learn_s / calls * 1e6, 2),
        "learn_cpu_us_per_call": round(learn_cpu_s / calls * 1e6, 2),
        "predict_p50_us": round(p50_us, 2),
        "predict_p99_us": round(p99_us, 2),
        "predict_mean_us": round(statistics.fmean(latencies_ns) / 1000, 2),
        "python": sys.version.split()[0],
    }
    print(f"{'source':<28} {'sessions':>8} {'calls':>8} {'learn_s':>8} {'cpu_s':>7} {'us/call':>8}"
          f" {'p50_us':>7} {'p99_us':>7} {'load':>5}")
    print(f"{source:<28} {args.sessions:>8} {calls:>8} {result['learn_s']:>8} {result['learn_cpu_s']:>7}"
          f" {result['learn_us_per_call']:>8} {result['predict_p50_us']:>7} {result['predict_p99_us']:>7}"
          f" {result['load_average_1m']:>5}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
