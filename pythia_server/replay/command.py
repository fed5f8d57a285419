"""``pythia-server workload``: convert recorded traces, generate workflows, print statistics.

    pythia-server workload convert --from chatdev|claude-code|mooncake IN OUT [options]
    pythia-server workload generate coding-agent|deep-research|writer-reviewer OUT [options]
    pythia-server workload stats FILE [--json]

Arrival options (both ``convert`` and ``generate``) re-time whole sessions, see
:mod:`pythia_server.replay.arrivals`; ``convert`` keeps recorded times unless told.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

SOURCES = ("chatdev", "claude-code", "mooncake")
KINDS = ("coding-agent", "deep-research", "writer-reviewer")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "workload", help="convert, generate and inspect workload files"
    )
    sub = parser.add_subparsers(
        dest="workload_command", required=True, metavar="ACTION"
    )

    convert = sub.add_parser(
        "convert", help="convert a recorded trace to the workload format"
    )
    convert.add_argument("--from", dest="source", required=True, choices=SOURCES)
    convert.add_argument("input", metavar="IN")
    convert.add_argument("output", metavar="OUT")
    convert.add_argument(
        "--block-size", type=int, help="tokens per hash id (64; mooncake 512)"
    )
    convert.add_argument(
        "--max-context", type=int, default=32768, help="claude-code: context limit"
    )
    convert.add_argument(
        "--max-output-tokens", type=int, default=8192, help="claude-code: output cap"
    )
    convert.add_argument(
        "--context-policy",
        choices=("scale", "drop"),
        default="scale",
        help="claude-code: scale long sessions down or drop them",
    )
    convert.add_argument(
        "--system-tokens", type=int, default=250, help="chatdev: role prompt size"
    )
    convert.add_argument(
        "--history",
        choices=("per-speaker", "shared"),
        default="per-speaker",
        help="chatdev: who shares a phase's history (shared = upper bound)",
    )
    convert.add_argument("--sessions", type=int, help="keep only the first N sessions")
    convert.add_argument(
        "--copies",
        type=int,
        default=1,
        help="replicate the sessions K times (fresh ids, shared prompts kept); use with --rate",
    )
    _arrival_options(convert, default="recorded")
    convert.set_defaults(func=run_convert)

    generate = sub.add_parser("generate", help="generate a synthetic agent workflow")
    generate.add_argument("kind", metavar="KIND", choices=KINDS, help=" | ".join(KINDS))
    generate.add_argument("output", metavar="OUT")
    generate.add_argument("--sessions", type=int, default=100)
    _arrival_options(generate, default="poisson")
    generate.set_defaults(func=run_generate)

    stats = sub.add_parser(
        "stats", help="print per-workflow statistics of a workload file"
    )
    stats.add_argument("file", metavar="FILE")
    stats.add_argument(
        "--block-size", type=int, help="for rows without block_size (default 512)"
    )
    stats.add_argument(
        "--json", action="store_true", help="print one JSON object per row"
    )
    stats.set_defaults(func=run_stats)


def _arrival_options(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--arrival",
        choices=("recorded", "poisson", "bursty", "trace"),
        default=None,
        help=f"session arrival process (default {default}; poisson when --rate is given)",
    )
    parser.add_argument(
        "--rate", type=float, default=None, help="sessions per second (default 1.0)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--speedup",
        type=float,
        default=1.0,
        help="recorded / trace: divide times by this",
    )
    parser.add_argument(
        "--arrival-trace",
        metavar="FILE",
        help="trace: session starts from an Azure CSV's TIMESTAMPs or a workload file",
    )
    parser.add_argument(
        "--burst-at-s", type=float, default=120.0, help="bursty: when the ramp starts"
    )
    parser.add_argument(
        "--burst-hold-s", type=float, default=300.0, help="bursty: time at +50%%"
    )
    parser.add_argument(
        "--burst-period-s", type=float, default=None, help="bursty: repeat period"
    )
    parser.set_defaults(default_arrival=default)


def _arrival_process(args: argparse.Namespace) -> Any:
    from pythia_server.replay.arrivals import (
        BurstyArrivals,
        PoissonArrivals,
        RecordedArrivals,
        TraceArrivals,
        read_arrival_times,
    )

    if args.arrival_trace is not None and args.arrival not in (None, "trace"):
        raise ValueError("--arrival-trace goes with --arrival trace")
    kind = args.arrival or (
        "trace"
        if args.arrival_trace is not None
        else "poisson"
        if args.rate is not None
        else args.default_arrival
    )
    rate = 1.0 if args.rate is None else args.rate
    if kind not in ("recorded", "trace") and rate <= 0:
        raise ValueError("--rate must be positive")
    if kind == "recorded":
        return RecordedArrivals(speedup=args.speedup)
    if kind == "trace":
        if args.arrival_trace is None:
            raise ValueError("--arrival trace needs --arrival-trace FILE")
        times = read_arrival_times(args.arrival_trace)
        return TraceArrivals(times_s=times, speedup=args.speedup)
    if kind == "poisson":
        return PoissonArrivals(rate_per_s=rate, seed=args.seed)
    return BurstyArrivals(
        rate_per_s=rate,
        seed=args.seed,
        burst_at_s=args.burst_at_s,
        hold_s=args.burst_hold_s,
        period_s=args.burst_period_s,
    )


def _fail(exc: Exception) -> None:
    from pythia_server.cli import CliError

    if isinstance(exc, OSError) and exc.filename:
        raise CliError(f"{exc.filename}: {exc.strerror or exc}") from exc
    raise CliError(str(exc)) from exc


def run_convert(args: argparse.Namespace) -> int:
    from pythia_server.replay.converters.chatdev import (
        ChatDevOptions,
        convert_chatdev,
        read_chatdev,
    )
    from pythia_server.replay.converters.claude_code import (
        ClaudeCodeOptions,
        convert_claude_code,
        read_claude_code,
    )
    from pythia_server.replay.converters.mooncake import convert_mooncake
    from pythia_server.replay.transforms import first_sessions, replicate_sessions

    try:
        if args.block_size is not None and args.block_size <= 0:
            raise ValueError("--block-size must be positive")
        if args.source == "chatdev":
            options = ChatDevOptions(
                block_size=args.block_size or 64,
                system_tokens=args.system_tokens,
                history=args.history,
            )
            requests = convert_chatdev(read_chatdev(args.input), options)
        elif args.source == "claude-code":
            cc = ClaudeCodeOptions(
                block_size=args.block_size or 64,
                max_context=args.max_context,
                max_output_tokens=args.max_output_tokens,
                context_policy=args.context_policy,
            )
            requests = convert_claude_code(read_claude_code(args.input), cc)
        else:
            requests = convert_mooncake(args.input, block_size=args.block_size or 512)
        if args.sessions is not None:
            requests = first_sessions(requests, args.sessions)
        requests = replicate_sessions(requests, args.copies)
    except (ValueError, OSError) as exc:
        _fail(exc)
    return _save(requests, args)


def run_generate(args: argparse.Namespace) -> int:
    from pythia_server.replay.generators import GENERATORS

    try:
        if args.sessions <= 0:
            raise ValueError("--sessions must be positive")
        requests = GENERATORS[args.kind](args.sessions, args.seed)
    except (ValueError, OSError) as exc:
        _fail(exc)
    return _save(requests, args)


def run_stats(args: argparse.Namespace) -> int:
    from pythia_server.replay.stats import format_table, workload_stats
    from pythia_server.replay.workload import load_workload

    try:
        rows = workload_stats(load_workload(args.file, block_size=args.block_size))
    except (ValueError, OSError) as exc:
        _fail(exc)
    if args.json:
        for row in rows:
            print(json.dumps(row.as_dict()))
    else:
        print(format_table(rows))
    return 0


def _save(requests: list[Any], args: argparse.Namespace) -> int:
    """Re-time whole sessions by the arrival options, write OUT and say what was written."""
    from pythia_server.replay.arrivals import apply_arrivals
    from pythia_server.replay.workload import save_workload

    try:
        requests = apply_arrivals(requests, _arrival_process(args))
        save_workload(requests, args.output)
    except (ValueError, OSError) as exc:
        _fail(exc)
    _report(requests, args.output)
    return 0


def _report(requests: list[Any], output: str) -> None:
    from pythia_server.replay.workload import session_keys

    block_size = requests[0].block_size if requests else 0
    print(
        f"wrote {len(requests)} requests in {len(session_keys(requests))} sessions to {output}"
        f" (block size {block_size}: pass --trace-block-size {block_size} to replays)"
    )
