"""``pythia-server profile``: learn a workload's first part, score predictions on the rest.

The only module of the profiler that does I/O: it reads a workload file (the replay's
format), turns its rows into :class:`CallObservation` values, runs
:func:`pythia_server.profiler.evaluation.evaluate` and prints a table or JSON.

Call times. A workload row records when a call became ready, not when it finished, so
times are rebuilt: a call starts at its ``timestamp`` when the row has one (converted
recordings do), else when its last dependency ended plus ``delay`` and ``tool_wait_ms``
(Dynamo's agentic semantics), and a root without a timestamp at 0. It ends just before
the first dependent call's wait began when that is known, else after a nominal service
time (``NOMINAL_MS_PER_OUTPUT_TOKEN`` per output token plus
``NOMINAL_MS_PER_PROMPT_TOKEN`` per prompt token). Rows without a workflow type are
profiled as one type, ``(untyped)``; rows without a session are each their own session.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

NOMINAL_MS_PER_OUTPUT_TOKEN = 20.0
NOMINAL_MS_PER_PROMPT_TOKEN = 0.1
UNTYPED = "(untyped)"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "profile",
        help="learn workflow models from a workload file and score their predictions",
        description="Learn from the time-ordered first part of each workflow type's sessions "
        "and score next-agent and output-bound predictions on the rest.",
    )
    parser.add_argument("--workload", required=True, metavar="FILE", help="workload JSONL (agentic Mooncake + tags)")
    parser.add_argument("--train-fraction", type=float, default=0.5, help="share of sessions learned (default 0.5)")
    parser.add_argument("--quantile", type=float, default=0.9, help="output-bound quantile (default 0.9)")
    parser.add_argument("--confidence", type=float, default=0.9, help="output-bound confidence (default 0.9)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pythia_server.cli import CliError
    from pythia_server.profiler.evaluation import evaluate
    from pythia_server.profiler.types import ProfilerConfig
    from pythia_server.replay.workload import WorkloadError, load_workload

    if not 0.0 < args.train_fraction < 1.0:
        raise CliError(f"--train-fraction must be between 0 and 1 (exclusive), got {args.train_fraction}")
    try:
        config = ProfilerConfig(bound_quantile=args.quantile, bound_confidence=args.confidence)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        requests = load_workload(args.workload)
    except WorkloadError as exc:
        raise CliError(str(exc)) from None
    sessions = observations_from_workload(requests)
    scores = evaluate(sessions, args.train_fraction, config)
    try:
        if args.json:
            json.dump({"workload": str(args.workload), "train_fraction": args.train_fraction,
                       "workflows": [asdict(s) for s in scores]}, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            print_table(scores)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into head: not an error of ours
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
    return 0


def observations_from_workload(requests: Sequence[Any]) -> dict[tuple[str, str], list[Any]]:
    """Workload rows to observations grouped by (workflow type, session); see the docstring."""
    from pythia_server.profiler.types import CallObservation

    by_id = {r.request_id: r for r in requests}
    children: dict[str, list[Any]] = {}
    for r in requests:
        for dep in r.wait_for:
            children.setdefault(dep, []).append(r)
    start_ms: dict[str, float] = {}
    end_ms: dict[str, float] = {}
    for r in _topological(requests, by_id):
        if r.timestamp_ms is not None:
            start = r.timestamp_ms
        elif r.wait_for:
            start = max(end_ms[d] for d in r.wait_for) + r.dependency_delay_ms
        else:
            start = 0.0
        start_ms[r.request_id] = start
        nominal = start + r.output_length * NOMINAL_MS_PER_OUTPUT_TOKEN + r.input_length * NOMINAL_MS_PER_PROMPT_TOKEN
        known = [c.timestamp_ms - c.dependency_delay_ms for c in children.get(r.request_id, ()) if c.timestamp_ms is not None]
        known = [t for t in known if t >= start]
        end_ms[r.request_id] = min(known) if known else nominal
    sessions: dict[tuple[str, str], list[Any]] = {}
    for r in requests:
        workflow = r.workflow_type or UNTYPED
        session = r.session_id if r.session_id is not None else f"request:{r.request_id}"
        sessions.setdefault((workflow, session), []).append(
            CallObservation(
                workflow=workflow,
                session=session,
                agent=r.agent,
                start_s=start_ms[r.request_id] / 1000.0,
                end_s=end_ms[r.request_id] / 1000.0,
                prompt_tokens=r.input_length,
                output_tokens=r.output_length,
                parent=getattr(r, "parent_agent", None),
                call_id=r.request_id,
                block_hashes=tuple(r.hash_ids),
                block_size=r.block_size,
            )
        )
    return sessions


def _topological(requests: Sequence[Any], by_id: dict[str, Any]) -> list[Any]:
    """Dependencies before dependents (the loader already rejected cycles)."""
    order: list[Any] = []
    done: set[str] = set()
    for root in requests:
        stack = [(root, False)]
        while stack:
            r, expanded = stack.pop()
            if r.request_id in done:
                continue
            if expanded:
                done.add(r.request_id)
                order.append(r)
                continue
            stack.append((r, True))
            stack.extend((by_id[d], False) for d in r.wait_for if d not in done)
    return order


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(scores: Sequence[Any]) -> None:
    headers = ("workflow", "train", "test", "steps", "top1", "top1_online", "markov", "markov_online",
               "ceiling", "coverage", "tightness", "mode", "model")
    rows = [
        (
            s.workflow, str(s.train_sessions), str(s.test_sessions), str(s.test_steps),
            _fmt(s.next_agent_top1), _fmt(s.next_agent_top1_online), _fmt(s.markov_top1),
            _fmt(s.markov_top1_online), _fmt(s.context_ceiling_top1), _fmt(s.length_bound_coverage), _fmt(s.length_bound_tightness, 2),
            s.mode, s.context_model,
        )
        for s in scores
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    for s in scores:
        if s.regex:
            print(f"\n{s.workflow}: {s.regex}")
