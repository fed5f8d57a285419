"""How low mean JCT can go at an arrival rate when decode is shared: a steady-state estimate.

Issue 6 asks for mean JCT <= 1.67x ideal at `sglang`'s 5x-ideal rate. The ideal runs each
session alone, at single-request decode steps. At a heavy rate the replicas must produce
rate x output tokens per session, which forces a batch, and a batched decode step reads the
KV of every call in it: every token on a session's critical path then takes that step
time. This prints, for the test split ``pythia_targets.py`` uses, the smallest batch (and
its step time) that sustains the rate, and the mean JCT that step costs the critical path
with no queueing and no prefill at all:

    mean ideal + critical-path output tokens x (forced step - single-request step)

An optimistic estimate, not a proof: prefill is left out (mixed chunks overlap it with
decode; its share of replica time with a perfect cache is printed for reference), the step
time is stationary and the context the token-weighted mean; a schedule that changes the
batch over time is not covered.

    python benchmarks/heavy_floor.py --workload deep_research.jsonl --rate 0.841 --replicas 2 \
        [--sessions 400] [--train-sessions 100]
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict

from pythia_server.engine.step_time import StepTimeModel
from pythia_server.engine.types import EngineConfig
from pythia_server.replay.heldout import held_out_split
from pythia_server.replay.metrics import ideal_jct_s
from pythia_server.replay.workload import WorkloadRequest, load_workload


def critical_path_output_tokens(calls: list[WorkloadRequest]) -> int:
    """Output tokens on the longest ``wait_for`` chain of one session's calls."""
    by_id = {c.request_id: c for c in calls}
    memo: dict[str, int] = {}

    def path(call: WorkloadRequest) -> int:
        if call.request_id not in memo:
            memo[call.request_id] = call.output_length + max(
                (path(by_id[w]) for w in call.wait_for if w in by_id), default=0)
        return memo[call.request_id]

    return max(path(c) for c in calls)


def prefill_s_per_session(test: list[WorkloadRequest], step_time: StepTimeModel, sessions: int) -> float:
    """Prefill kernel seconds per session with a perfect cache (every block sent before is reused)."""
    seen: set[int] = set()
    total_ms = 0.0
    for call in test:  # file order is dependency order within a session
        reused = 0
        for block in call.hash_ids:
            if block not in seen:
                break
            reused += 1
        cached = min(reused * call.block_size, call.input_length)
        total_ms += step_time.prefill_kernel_ms([call.input_length - cached], [cached])
        seen.update(call.hash_ids)
    return total_ms / 1000.0 / sessions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", required=True)
    parser.add_argument("--rate", type=float, required=True, help="Poisson session arrivals per second")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--sessions", type=int, default=400, help="test sessions (replicated, as pythia_targets)")
    parser.add_argument("--train-sessions", type=int, default=100)
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.replicas <= 0:
        parser.error("--rate and --replicas must be positive")

    requests = load_workload(args.workload, block_size=64)
    _, test = held_out_split(requests, 0.5, train_sessions=args.train_sessions, test_sessions=args.sessions)
    step_time = StepTimeModel.load()
    ideal = ideal_jct_s(test, step_time, EngineConfig.from_gpu())
    by_session: dict[str, list[WorkloadRequest]] = defaultdict(list)
    for call in test:
        by_session[call.session_id or call.request_id].append(call)
    n = len(by_session)
    output = sum(c.output_length for c in test)
    context = sum(c.output_length * (c.input_length + c.output_length / 2) for c in test) / output
    critical = statistics.mean(critical_path_output_tokens(calls) for calls in by_session.values())
    prefill_share = args.rate / args.replicas * prefill_s_per_session(test, step_time, n)
    need = args.rate * output / n / args.replicas  # output tokens/s per replica
    alone = step_time.decode_s(1, context)
    ideal_mean = statistics.mean(ideal.values())
    print(f"{n} test sessions: {output / n:.0f} output tokens each, {critical:.0f} on the critical path; "
          f"decode context {context:.0f} tokens (token-weighted); mean ideal JCT {ideal_mean:.1f} s")
    print(f"at {args.rate:g} sessions/s on {args.replicas} replica(s): {need:.0f} output tokens/s per replica; "
          f"prefill with a perfect cache, one call a pass, would take {prefill_share:.0%} of replica time")
    batch = 1
    while batch / step_time.decode_s(batch, context) < need and batch < 4096:
        batch += 1
    step = step_time.decode_s(batch, context)
    if batch / step < need:
        print(f"no batch up to {batch} decodes {need:.0f} tokens/s: the replicas cannot sustain this rate")
        return 0
    floor = ideal_mean + critical * (step - alone)
    print(f"smallest batch {batch}, decode step {step * 1000:.1f} ms (alone {alone * 1000:.1f} ms): "
          f"mean JCT floor {floor:.1f} s = {floor / ideal_mean:.2f}x ideal")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
