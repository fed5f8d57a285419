"""Pythia against the baselines, and each Pythia mechanism off in turn, on a held-out split.

The workload's sessions are split in file order: the first ``--train-fraction`` are
replayed once under ``pythia`` so its profiler learns the workflow types (as a gateway
would have before), the rest are the test split every policy is measured on. Each Pythia
bundle starts from a copy of that trained profiler and keeps learning online.

    python benchmarks/pythia_ablation.py --workload FILE --rate 2 --replicas 2 \
        [--trace-block-size 64] [--sessions N] [--policies sglang,...] [--json OUT]

Prints one table (``replay.bench.format_table``) plus Pythia's warm counters and the
profiler's mode per workflow type; ``--json`` writes the rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from pythia_server.engine.step_time import StepTimeModel
from pythia_server.engine.types import EngineConfig
from pythia_server.replay.arrivals import PoissonArrivals, apply_arrivals
from pythia_server.replay.bench import format_table, workflow_graphs
from pythia_server.replay.heldout import (
    held_out_split,
    learns,
    make_bundle,
    profiler_modes,
    train_profiler,
)
from pythia_server.replay.metrics import ideal_jct_s, summarize
from pythia_server.replay.runner import ReplayConfig, ReplayRunner
from pythia_server.replay.workload import load_workload, session_keys

DEFAULT_POLICIES = (
    "sglang,sglang-router,autellix,kvflow,continuum,dynamo-kv,"
    "pythia,pythia-weighted,pythia-no-warm,pythia-no-retention,pythia-no-priority,pythia-no-lookahead"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", required=True)
    parser.add_argument("--rate", type=float, required=True, help="Poisson session arrivals per second")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--trace-block-size", type=int, default=None)
    parser.add_argument("--train-fraction", type=float, default=0.5)
    parser.add_argument("--sessions", type=int, help="replicate the workload's sessions up to N (fresh ids)")
    parser.add_argument("--policies", default=DEFAULT_POLICIES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args(argv)
    if not 0.0 < args.train_fraction < 1.0:
        parser.error("--train-fraction must be within (0, 1)")

    requests = load_workload(args.workload, block_size=args.trace_block_size)
    sizes = {}
    if args.sessions:  # split first, then replicate each side: the test split stays unseen
        train_n = max(1, int(args.sessions * args.train_fraction))
        sizes = {"train_sessions": train_n, "test_sessions": max(1, args.sessions - train_n)}
    try:
        train, test = held_out_split(requests, args.train_fraction, **sizes)
    except ValueError as exc:
        parser.error(str(exc))
    train = apply_arrivals(train, PoissonArrivals(args.rate, args.seed))
    test = apply_arrivals(test, PoissonArrivals(args.rate, args.seed + 1))
    step_time = StepTimeModel.load()
    engine = EngineConfig.from_gpu()
    config = ReplayConfig(replicas=args.replicas, engine=engine)
    profiler = train_profiler(train, config, step_time)
    modes = profiler_modes(profiler)

    ideal = ideal_jct_s(test, step_time, engine)
    graphs = workflow_graphs(test)
    rows, extras, failures = [], {}, {}
    for name in args.policies.split(","):
        pythia = learns(name)
        bundle = make_bundle(name, profiler, seed=args.seed, graphs=graphs)
        try:
            result = ReplayRunner(test, bundle, config, step_time).run()
        except RuntimeError as exc:  # an engine fault must not hide the other rows
            failures[name] = str(exc)
            print(f"  {name} failed: {exc}", file=sys.stderr)
            continue
        rows.append(summarize(result, ideal))
        if pythia:
            counters = bundle.cache_hints.counters.as_dict()  # type: ignore[union-attr]
            counters.update(sent=result.prefetches_sent, dropped=result.prefetches_dropped,
                            resident=result.prefetches_resident)
            extras[name] = counters
        print(f"  ran {name}", file=sys.stderr)
    print(f"workload {args.workload}: {len(session_keys(train))} training sessions, {len(session_keys(test))} test "
          f"sessions at {args.rate:g}/s on {args.replicas} replicas; profiler modes after training: {modes}")
    print(format_table(rows, args.rate))
    for name, error in failures.items():
        print(f"{name:20s} FAILED: {error}")
    for name, counters in extras.items():
        print(f"{name:20s} warms " + ", ".join(f"{k} {v}" for k, v in counters.items()))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"workload": args.workload, "rate": args.rate, "replicas": args.replicas, "modes": modes,
                       "rows": [asdict(r) for r in rows], "warms": extras,
                       "failures": failures}, out, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
