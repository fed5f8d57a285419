"""Issue 6, live: phase-adaptive against reactive autoscaling through the real gateway.

The offline comparison is ``benchmarks/pythia_autoscale.py``; this one runs the same kind
of workload through ``pythia-server serve --autoscale KIND`` (``gateway/autoscaling.py``):
simulated replicas are launched (with a modelled cold start) and stopped as the scaler
decides, and a real ``openai`` client replays the sessions (``replay/live.py``).

A generated deep-research workload is split in order: the first ``--train-sessions``
teach Pythia's profiler through the gateway (Poisson arrivals), then the gateway is left
to scale back to one replica, the caches are flushed, and the measured split arrives in
bursts (``BurstyArrivals``: ``--burst-factor`` x the base rate for ``--hold`` seconds every
``--period``). Both runs use the ``pythia`` policy; only the scaler differs. Replica-seconds
are the autoscaler's own count (launch to removal, cold start included) over the measured
split, in engine seconds (wall x speed-up), like JCTs.

    python benchmarks/live_autoscale.py [--sessions 60] [--train-sessions 40] [--rate 0.4]
        [--speedup 4] [--max-replicas 4] [--cold-start 30] [--target-calls 16] [--seed 0] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from pythia_server.replay.arrivals import BurstyArrivals, PoissonArrivals, apply_arrivals
from pythia_server.replay.generators.deep_research import generate_deep_research
from pythia_server.replay.live import ServeProcess, replay_live
from pythia_server.replay.metrics import percentile
from pythia_server.replay.transforms import split_sessions

SCALERS = ("reactive", "phase-adaptive")


def autoscaler(url: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/pythia/api/report", timeout=60)
    response.raise_for_status()
    return response.json()["autoscaler"] or {}


def settle(url: str, timeout_s: float) -> int:
    """Wait until the gateway is back to one serving replica (nothing starting or draining)."""
    deadline = time.monotonic() + timeout_s
    state = autoscaler(url)
    while time.monotonic() < deadline and (state.get("replicas"), state.get("starting"), state.get("draining")) != (
            1, 0, 0):
        time.sleep(1.0)
        state = autoscaler(url)
    return int(state.get("replicas") or 0)


def run_scaler(kind: str, train: list[Any], test: list[Any], args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    serve_args = ["--autoscale", kind, "--max-replicas", str(args.max_replicas), "--cold-start-s", str(args.cold_start),
                  "--scale-target-calls", str(args.target_calls), "--no-assemble",
                  "--log-dir", str(workdir / f"logs-{kind}")]
    with ServeProcess("pythia", replicas=1, speedup=args.speedup, db_path=str(workdir / f"{kind}.db"),
                      extra_args=serve_args) as serve:
        replay_live(serve.url, train, speedup=args.speedup)
        modes = serve.modes()
        start_replicas = settle(serve.url, timeout_s=120)
        serve.flush_caches()
        before = autoscaler(serve.url)
        run = replay_live(serve.url, test, speedup=args.speedup)
        after = autoscaler(serve.url)
    jct = sorted(run.jct_s.values())
    return {
        "scaler": kind, "modes": modes, "start_replicas": start_replicas, "sessions": len(jct),
        "mean_jct_s": sum(jct) / len(jct), "p95_jct_s": percentile(jct, 95),
        "replica_s": (after["replica_seconds"] - before["replica_seconds"]) * args.speedup,
        "peak_replicas": after.get("peak_replicas"), "hit_rate": run.hit_rate, "wall_s": run.wall_s,
        "scale_changes": len(after.get("decisions", [])) - len(before.get("decisions", [])),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=60, help="measured sessions")
    parser.add_argument("--train-sessions", type=int, default=40)
    parser.add_argument("--rate", type=float, default=0.4, help="base session arrivals per engine second")
    parser.add_argument("--burst-factor", type=float, default=4.0)
    parser.add_argument("--burst-at", type=float, default=30.0)
    parser.add_argument("--hold", type=float, default=30.0)
    parser.add_argument("--period", type=float, default=120.0)
    parser.add_argument("--speedup", type=float, default=4.0)
    parser.add_argument("--max-replicas", type=int, default=4)
    parser.add_argument("--cold-start", type=float, default=30.0, help="engine seconds")
    parser.add_argument("--target-calls", type=float, default=16.0, help="calls per replica both scalers aim at")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args(argv)

    requests = generate_deep_research(args.train_sessions + args.sessions, args.seed)
    train, test = split_sessions(requests, args.train_sessions / (args.train_sessions + args.sessions))
    train = apply_arrivals(train, PoissonArrivals(args.rate, args.seed))
    test = apply_arrivals(test, BurstyArrivals(args.rate, args.seed + 1, burst_at_s=args.burst_at, ramp_s=5.0,
                                               hold_s=args.hold, burst_factor=args.burst_factor,
                                               period_s=args.period))
    rows = []
    with tempfile.TemporaryDirectory(prefix="pythia-live-autoscale-") as tmp:
        for kind in SCALERS:
            rows.append(run_scaler(kind, train, test, args, Path(tmp)))
            print(f"  ran {kind}", file=sys.stderr)
    print(f"deep research, {args.sessions} measured sessions (after {args.train_sessions} training), bursty "
          f"{args.rate:g}/s x{args.burst_factor:g} for {args.hold:g}s every {args.period:g}s, live at speed-up "
          f"{args.speedup:g}, cold start {args.cold_start:g}s, 1 to {args.max_replicas} replicas, "
          f"{args.target_calls:g} calls per replica")
    print(f"{'scaler':16} {'mean JCT s':>10} {'p95 JCT s':>10} {'replica-s':>10} {'peak':>5} {'changes':>8} "
          f"{'hit':>6} {'wall s':>7}  modes")
    for r in rows:
        print(f"{r['scaler']:16} {r['mean_jct_s']:10.1f} {r['p95_jct_s']:10.1f} {r['replica_s']:10.0f} "
              f"{r['peak_replicas']:>5} {r['scale_changes']:>8} {r['hit_rate']:6.3f} {r['wall_s']:7.1f}  {r['modes']}")
    reactive, phase = rows
    print(f"phase-adaptive vs reactive: p95 {phase['p95_jct_s'] / reactive['p95_jct_s'] - 1:+.1%}, "
          f"mean {phase['mean_jct_s'] / reactive['mean_jct_s'] - 1:+.1%}, "
          f"replica-s {phase['replica_s'] / reactive['replica_s'] - 1:+.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
