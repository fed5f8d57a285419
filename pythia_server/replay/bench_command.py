"""``pythia-server bench``: replay a workload under one or more policies and print the figures.

    pythia-server bench --workload FILE --policy sglang,sglang-router [--replicas N]
                        [--rate R | --concurrency C] [--sessions N] [--trace-block-size B]
                        [--json] [--sweep R1,R2,... --plot FILE.svg]

Without ``--rate`` or ``--concurrency`` sessions start at their recorded times. ``--json``
prints one object per policy (per rate in a sweep). A sweep replays every policy at every
Poisson rate, shows a progress bar on stderr and writes mean JCT against rate as SVG.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("bench", help="replay a workload offline under policies and compare them")
    parser.add_argument("--workload", required=True, metavar="FILE", help="workload JSONL (docs/workloads.md)")
    parser.add_argument("--policy", required=True, help="comma-separated policy names (e.g. sglang,sglang-router)")
    parser.add_argument("--replicas", type=int, default=1, help="simulated SGLang replicas (default 1)")
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--rate", type=float, help="Poisson session arrivals per second")
    load.add_argument("--concurrency", type=int, help="closed loop: sessions live at once")
    load.add_argument("--sweep", help="comma-separated Poisson rates (sessions/s) to sweep")
    parser.add_argument("--sessions", type=int, help="keep the first N sessions (replicated if the file has fewer)")
    parser.add_argument("--trace-block-size", type=int, help="tokens per hash id for rows without block_size")
    parser.add_argument("--block-size", type=int, default=64, help="the gateway's prefix block size (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reprioritize-every", type=float, default=1.0, metavar="SECONDS",
                        help="re-ask the priority policy for waiting calls this often, virtual seconds "
                             "(default 1; 0 = only at submission, as a live SGLang allows)")
    parser.add_argument("--cold-start", type=float, default=30.0, metavar="SECONDS",
                        help="a replica a bundle's autoscaler adds serves this long after launch (default 30)")
    parser.add_argument("--json", action="store_true", help="print JSON objects instead of a table")
    parser.add_argument("--plot", metavar="FILE", help="with --sweep: write JCT vs load (.svg)")
    parser.add_argument("--out", metavar="FILE", help="also write the JSON results to FILE")
    parser.set_defaults(func=run_bench)


def _parse_rates(text: str) -> list[float]:
    from pythia_server.cli import CliError

    try:
        rates = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CliError(f"--sweep takes comma-separated numbers, got {text!r}") from None
    if not rates or any(r <= 0 for r in rates):
        raise CliError("--sweep needs at least one rate, all positive")
    return sorted(set(rates))


def _check(args: argparse.Namespace) -> list[str]:
    from pythia_server.cli import CliError
    from pythia_server.policy import POLICY_NAMES

    names = [n.strip() for n in args.policy.split(",") if n.strip()]
    if not names:
        raise CliError("--policy needs at least one name")
    unknown = [n for n in names if n not in POLICY_NAMES]
    if unknown:
        raise CliError(f"unknown policy {unknown[0]!r}; known: {', '.join(POLICY_NAMES)}")
    if args.replicas <= 0:
        raise CliError("--replicas must be positive")
    if args.concurrency is not None and args.concurrency <= 0:
        raise CliError("--concurrency must be positive")
    if args.rate is not None and args.rate <= 0:
        raise CliError("--rate must be positive")
    if args.sessions is not None and args.sessions <= 0:
        raise CliError("--sessions must be positive")
    if args.block_size <= 0 or (args.trace_block_size is not None and args.trace_block_size <= 0):
        raise CliError("block sizes must be positive")
    if args.reprioritize_every < 0 or args.cold_start < 0:
        raise CliError("--reprioritize-every and --cold-start must not be negative")
    if args.plot is not None:
        if args.sweep is None:
            raise CliError("--plot goes with --sweep")
        if Path(args.plot).suffix.lower() != ".svg":
            raise CliError("--plot writes SVG: give a file name ending in .svg")
    if not Path(args.workload).is_file():
        raise CliError(f"no workload file {args.workload!r}")
    return names


def _progress(done: int, total: int, label: str) -> None:
    width = 30
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label:<30}")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def run_bench(args: argparse.Namespace) -> int:
    from pythia_server.cli import CliError
    from pythia_server.engine.step_time import StepTimeModel
    from pythia_server.replay.bench import (
        BenchSettings,
        format_table,
        prepare_workload,
        run_policies,
        sweep,
        sweep_svg,
    )
    from pythia_server.replay.workload import WorkloadError

    names = _check(args)
    settings = BenchSettings(replicas=args.replicas, concurrency=args.concurrency, block_size=args.block_size,
                             seed=args.seed, reprioritize_every_s=args.reprioritize_every or None,
                             cold_start_s=args.cold_start)
    step_time = StepTimeModel.load()
    rows: list[dict[str, Any]] = []
    try:
        if args.sweep is not None:
            rates = _parse_rates(args.sweep)
            results = sweep(args.workload, names, rates, settings, step_time, trace_block_size=args.trace_block_size,
                            sessions=args.sessions, progress=_progress)
            tables = []
            for rate, metrics in results.items():
                rows.extend({"rate_per_s": rate, **m.as_dict()} for m in metrics)
                tables.append(format_table(metrics, rate))
            if args.plot is not None:
                Path(args.plot).write_text(sweep_svg(results, f"{Path(args.workload).name}: mean JCT vs load"))
            text = "\n\n".join(tables)
        else:
            requests = prepare_workload(args.workload, trace_block_size=args.trace_block_size,
                                        sessions=args.sessions, rate=args.rate, seed=args.seed)
            metrics = run_policies(names, requests, settings, step_time)
            rows = [{"rate_per_s": args.rate, **m.as_dict()} for m in metrics]
            text = format_table(metrics, args.rate)
    except (WorkloadError, ValueError) as exc:
        raise CliError(str(exc)) from None
    except RuntimeError as exc:  # a replay that could not finish (e.g. a prompt no replica can hold)
        raise CliError(str(exc)) from None
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(text)
        if args.plot is not None:
            print(f"wrote {args.plot}")
    if args.out is not None:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
    return 0
