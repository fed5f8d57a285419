"""Cross-check against an outside simulator: our ``sglang`` baseline vs NVIDIA Dynamo's replay.

Run: ``python benchmarks/dynamo_crosscheck.py [--dynamo-python /work/dynamo-venv/bin/python]
[--replicas 2] [--json dynamo_crosscheck.json]``.

For each trace (converted ChatDev, generated deep research, converted Claude Code, plain
Mooncake rows), both simulators replay the *same file* with the *same timing table* and
the same KV capacity:

- ours: ``ReplayRunner`` with the ``sglang`` bundle (round robin, FCFS, LRU) on
  ``--replicas`` simulated SGLang replicas;
- Dynamo 1.4.2 (``python -m dynamo.replay TRACE --replay-mode offline --router-mode
  round_robin --num-workers N``, its SGLang mocker), fed an NPZ timing table in its mocker
  format built here from ``pythia_server/data/aic_Meta-Llama-3.1-8B.json`` through our
  ``StepTimeModel`` (``prefill_ttft_ms[isl]`` = our one-request prefill of ``isl``
  uncached tokens; ``decode_itl[kv, ctx]`` = our decode step for ``kv / ctx`` requests at
  context ``ctx``; our 1 ms per-step overhead is inside both).

It prints TTFT, end-to-end latency and prefix reuse side by side, with the relative
difference, plus a third column: ours with the prefill's attention over cached tokens
switched off (Dynamo's NPZ model cannot express that term), and writes JSON. docs/benchmarks.md explains each difference above 10%.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pythia_server.engine.step_time import StepTimeModel
from pythia_server.engine.types import EngineConfig
from pythia_server.policy import make_policy
from pythia_server.replay.arrivals import RecordedArrivals, apply_arrivals
from pythia_server.replay.bench import prepare_workload
from pythia_server.replay.converters.chatdev import convert_chatdev, read_chatdev
from pythia_server.replay.converters.claude_code import (
    convert_claude_code,
    read_claude_code,
)
from pythia_server.replay.converters.mooncake import convert_mooncake
from pythia_server.replay.generators.deep_research import generate_deep_research
from pythia_server.replay.metrics import percentile
from pythia_server.replay.runner import ReplayConfig, ReplayRunner
from pythia_server.replay.transforms import first_sessions
from pythia_server.replay.workload import WorkloadRequest, save_workload

SHARED = Path(__file__).resolve().parents[2] / "shared" / "workloads"
BLOCK = 64
KV_BLOCKS = 6_250  # 400,000 tokens: SimServerConfig's default KV pool


def timing_npz(step_time: StepTimeModel, path: Path) -> None:
    """Our step-time model tabulated in Dynamo's mocker format (fine grids, linear between)."""
    isl = np.linspace(1, 65_536, 513)
    ttft = np.array([step_time.prefill_s([int(x)], [0]) * 1000.0 for x in isl])
    kv = np.linspace(0, KV_BLOCKS * BLOCK, 201)
    ctx = np.linspace(1, 65_536, 257)
    itl = np.array([[step_time.decode_s(max(1, round(k / c)), c) * 1000.0 for c in ctx] for k in kv])
    np.savez(path, prefill_isl=isl, prefill_ttft_ms=ttft, decode_active_kv_tokens=kv,
             decode_context_length=ctx, decode_itl=itl)


def traces(tmp: Path) -> list[tuple[str, Path, str, int]]:
    """(name, file, Dynamo trace format, trace block size) for each workload compared."""
    out = []
    chatdev = tmp / "chatdev.jsonl"
    save_workload(first_sessions(convert_chatdev(read_chatdev(SHARED / "chatdev_calls.jsonl")), 40), chatdev)
    chatdev_fast = tmp / "chatdev_rate.jsonl"
    save_workload(prepare_workload(str(chatdev), sessions=200, rate=0.5), chatdev_fast)
    out.append(("chatdev x200 @0.5/s", chatdev_fast, "agentic_mooncake", BLOCK))
    research = tmp / "deep_research_raw.jsonl"
    save_workload(generate_deep_research(100, seed=0), research)
    research_fast = tmp / "deep_research.jsonl"
    save_workload(prepare_workload(str(research), rate=1.0), research_fast)
    out.append(("deep-research x100 @1/s", research_fast, "agentic_mooncake", BLOCK))
    claude = tmp / "claude_code_raw.jsonl"
    save_workload(first_sessions(convert_claude_code(read_claude_code(SHARED / "claude_code_calls.jsonl")), 20), claude)
    claude_fast = tmp / "claude_code.jsonl"
    save_workload(prepare_workload(str(claude), rate=0.05), claude_fast)
    out.append(("claude-code x20 @0.05/s", claude_fast, "agentic_mooncake", BLOCK))
    mooncake = tmp / "mooncake.jsonl"
    context = EngineConfig().context_length  # SGLang refuses longer prompts; Dynamo has no such check
    rows = [r for r in convert_mooncake(SHARED / "mooncake_synthetic_trace.jsonl")[:600] if r.input_length < context]
    save_workload(rows, mooncake)
    out.append((f"mooncake {len(rows)} rows", mooncake, "agentic_mooncake", 512))
    slowed = tmp / "mooncake_half_rate.jsonl"  # the same rows at half the recorded arrival rate
    save_workload(apply_arrivals(rows, RecordedArrivals(speedup=0.5)), slowed)
    out.append((f"mooncake {len(rows)} rows, half rate", slowed, "agentic_mooncake", 512))
    return out


def ours(requests: list[WorkloadRequest], replicas: int, step_time: StepTimeModel) -> dict[str, float]:
    engine = EngineConfig(max_total_num_tokens=KV_BLOCKS * BLOCK)
    result = ReplayRunner(requests, make_policy("sglang"), ReplayConfig(replicas=replicas, engine=engine),
                          step_time).run()
    served = [r for r in result.requests if r.output_tokens > 0]
    ttft = [r.ttft_s * 1000.0 for r in served if r.ttft_s is not None]
    e2e = [r.e2e_s * 1000.0 for r in served]
    prompt = sum(r.prompt_tokens for r in result.requests)
    return {
        "requests": len(served),
        "mean_ttft_ms": sum(ttft) / len(ttft),
        "p50_ttft_ms": percentile(ttft, 50),
        "p95_ttft_ms": percentile(ttft, 95),
        "mean_e2e_ms": sum(e2e) / len(e2e),
        "p95_e2e_ms": percentile(e2e, 95),
        "prefix_reuse": sum(r.cached_tokens for r in result.requests) / prompt,
        "first_admission_reuse": sum(r.cached_tokens for r in result.requests) / prompt,  # counted once per call
        "preemptions": result.retractions + result.preemptions,
        "duration_s": max(r.finish_s for r in result.requests) - min(r.ready_s for r in result.requests),
    }


def dynamo(python: str, trace: Path, fmt: str, block: int, replicas: int, npz: Path, tmp: Path) -> dict[str, float]:
    report = tmp / f"{trace.stem}.dynamo.json"
    engine = {
        "engine_type": "sglang", "block_size": BLOCK, "num_gpu_blocks": KV_BLOCKS, "planner_profile_data": str(npz),
        "max_num_seqs": EngineConfig(max_total_num_tokens=KV_BLOCKS * BLOCK).running_request_cap,
        "max_num_batched_tokens": 16_384,
        "sglang": {"chunked_prefill_size": 8192, "max_prefill_tokens": 16_384, "schedule_policy": "fcfs"},
    }
    argv = [python, "-m", "dynamo.replay", str(trace), "--replay-mode", "offline", "--router-mode", "round_robin",
            "--num-workers", str(replicas), "--trace-format", fmt, "--trace-block-size", str(block),
            "--extra-engine-args", json.dumps(engine), "--report-json", str(report)]
    env = {**os.environ, "DYN_LOG": "warn"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"dynamo.replay failed ({done.returncode}): {done.stderr[-2000:]}")
    data = json.loads(report.read_text())
    return {
        "requests": data["completed_requests"],
        "mean_ttft_ms": data["mean_ttft_ms"],
        "p50_ttft_ms": data["median_ttft_ms"],
        "p95_ttft_ms": data["p95_ttft_ms"],
        "mean_e2e_ms": data["mean_e2e_latency_ms"],
        "p95_e2e_ms": data["p95_e2e_latency_ms"],
        "prefix_reuse": data["prefix_cache_reused_ratio"],
        "first_admission_reuse": data["first_admission_prefix_cache_reused_ratio"],
        "duration_s": data["duration_ms"] / 1000.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dynamo-python", default="/work/dynamo-venv/bin/python")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--json", default="dynamo_crosscheck.json")
    args = parser.parse_args()
    step_time = StepTimeModel.load()
    # Dynamo's NPZ model times a prefill by its new tokens only; ours also charges their
    # attention over the cached prefix. The same model with that term off isolates it.
    no_prefix = StepTimeModel.load()
    no_prefix.prefix_coef_ms = 0.0
    rows: list[dict[str, Any]] = []
    metrics = ("mean_ttft_ms", "p50_ttft_ms", "p95_ttft_ms", "mean_e2e_ms", "p95_e2e_ms", "prefix_reuse",
               "first_admission_reuse", "duration_s")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        npz = tmp / "timing.npz"
        timing_npz(step_time, npz)
        for label, path, fmt, block in traces(tmp):
            from pythia_server.replay.workload import load_workload

            requests = load_workload(path)
            a = ours(requests, args.replicas, step_time)
            c = ours(requests, args.replicas, no_prefix)
            b = dynamo(args.dynamo_python, path, fmt, block, args.replicas, npz, tmp)
            row = {"trace": label, "replicas": args.replicas, "pythia": a, "pythia_no_prefix_cost": c, "dynamo": b,
                   "diff": {m: (a[m] - b[m]) / b[m] if b[m] else None for m in metrics},
                   "diff_no_prefix_cost": {m: (c[m] - b[m]) / b[m] if b[m] else None for m in metrics}}
            rows.append(row)
            print(f"\n{label}  ({a['requests']} vs {b['requests']} requests, {args.replicas} replicas)")
            print(f"  {'metric':<22} {'pythia':>11} {'dynamo':>11} {'diff':>8} {'no-prefix':>11} {'diff':>8}")
            for m in metrics:
                d1, d2 = row["diff"][m], row["diff_no_prefix_cost"][m]
                t1 = "-" if d1 is None else f"{d1:+.1%}"
                t2 = "-" if d2 is None else f"{d2:+.1%}"
                print(f"  {m:<22} {a[m]:>11.3f} {b[m]:>11.3f} {t1:>8} {c[m]:>11.3f} {t2:>8}")
            sys.stdout.flush()
    Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
