"""Phase-adaptive against reactive (KPA/HPA) autoscaling under bursty session arrivals.

The workload's sessions are split in file order as in ``pythia_ablation.py``: the first
``--train-fraction`` train ``pythia``'s profiler on a fixed pool, the rest are replayed
with bursty arrivals (``BurstyArrivals``: base rate, then ``--burst-factor`` x for
``--hold`` seconds every ``--period``) from ``--replicas`` replicas under each scaler.
Every run uses the same routing, priority and cache policies (``pythia``'s) unless named
otherwise, so only the scaler differs; both scalers share one ``ReactiveConfig``.

    python benchmarks/pythia_autoscale.py --workload FILE --rate 0.5 [--trace-block-size 64]
        [--sessions N] [--cold-start 30] [--json OUT]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import asdict, replace

from pythia_server.engine.step_time import StepTimeModel
from pythia_server.engine.types import EngineConfig
from pythia_server.policy import make_policy
from pythia_server.policy.pythia import (
    PhaseConfig,
    ReactiveAutoscaler,
    ReactiveConfig,
    make_pythia_bundle,
)
from pythia_server.replay.arrivals import (
    BurstyArrivals,
    PoissonArrivals,
    apply_arrivals,
)
from pythia_server.replay.bench import format_table
from pythia_server.replay.metrics import ideal_jct_s, summarize
from pythia_server.replay.runner import ReplayConfig, ReplayRunner
from pythia_server.replay.transforms import resize_sessions, split_sessions
from pythia_server.replay.workload import load_workload, session_keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", required=True)
    parser.add_argument("--rate", type=float, required=True, help="base session arrivals per second")
    parser.add_argument("--burst-factor", type=float, default=4.0)
    parser.add_argument("--burst-at", type=float, default=60.0)
    parser.add_argument("--ramp", type=float, default=5.0)
    parser.add_argument("--hold", type=float, default=30.0)
    parser.add_argument("--period", type=float, default=180.0)
    parser.add_argument("--replicas", type=int, default=1, help="replicas at the start (and for training)")
    parser.add_argument("--max-replicas", type=int, default=8)
    parser.add_argument("--target-calls", type=float, default=32.0, help="calls per replica both scalers aim at")
    parser.add_argument("--phase-target-calls", type=float, help="the phase-adaptive's own target (default: the same)")
    parser.add_argument("--cold-start", type=float, default=30.0)
    parser.add_argument("--step-s", type=float, default=PhaseConfig().step_s, help="phase-adaptive step duration")
    parser.add_argument("--drain-delay", type=float, default=PhaseConfig().drain_delay_s)
    parser.add_argument("--horizon-steps", type=int, default=PhaseConfig().horizon_steps)
    parser.add_argument("--trace-block-size", type=int, default=None)
    parser.add_argument("--train-fraction", type=float, default=0.5)
    parser.add_argument("--sessions", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args(argv)

    requests = load_workload(args.workload, block_size=args.trace_block_size)
    train, test = split_sessions(requests, args.train_fraction)
    if args.sessions:
        train = resize_sessions(train, max(1, int(args.sessions * args.train_fraction)))
        test = resize_sessions(test, max(1, args.sessions - int(args.sessions * args.train_fraction)))
    train = apply_arrivals(train, PoissonArrivals(args.rate, args.seed))
    bursty = BurstyArrivals(args.rate, args.seed + 1, burst_at_s=args.burst_at, ramp_s=args.ramp,
                            hold_s=args.hold, burst_factor=args.burst_factor, period_s=args.period)
    test = apply_arrivals(test, bursty)
    step_time = StepTimeModel.load()
    engine = EngineConfig.from_gpu()
    warmup = make_policy("pythia")
    ReplayRunner(train, warmup, ReplayConfig(replicas=max(args.replicas, 2), engine=engine), step_time).run()
    profiler = warmup.router.context.profiler  # type: ignore[attr-defined]

    reactive = ReactiveConfig(target_calls_per_replica=args.target_calls, max_replicas=args.max_replicas)
    phase = PhaseConfig(cold_start_s=args.cold_start, step_s=args.step_s, drain_delay_s=args.drain_delay,
                        horizon_steps=args.horizon_steps)
    runs = {
        "sglang-router+reactive": lambda: replace(make_policy("sglang-router"), scaler=ReactiveAutoscaler(reactive)),
        "pythia+reactive": lambda: replace(make_policy("pythia", profiler=copy.deepcopy(profiler)),
                                           scaler=ReactiveAutoscaler(reactive)),
        "pythia+phase-adaptive": lambda: make_pythia_bundle(
            "pythia", profiler=copy.deepcopy(profiler), phase=phase, autoscale=True,
            reactive=replace(reactive, target_calls_per_replica=args.phase_target_calls or args.target_calls)),
    }
    ideal = ideal_jct_s(test, step_time, engine)
    config = ReplayConfig(replicas=args.replicas, engine=engine, cold_start_s=args.cold_start)
    rows = []
    for label, build in runs.items():
        bundle = replace(build(), name=label)
        result = ReplayRunner(test, bundle, config, step_time).run()
        rows.append(summarize(result, ideal))
        print(f"  ran {label}", file=sys.stderr)
    print(f"workload {args.workload}: {len(session_keys(test))} test sessions, bursty {args.rate:g}/s x"
          f"{args.burst_factor:g} for {args.hold:g}s every {args.period:g}s, cold start {args.cold_start:g}s, "
          f"{args.target_calls:g} calls per replica")
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"workload": args.workload, "args": vars(args), "rows": [asdict(r) for r in rows]},
                      out, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
