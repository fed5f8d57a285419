"""Speed of the offline simulator: ChatDev-sized workflows on N simulated replicas.

Each workflow is a run of ``--calls`` sequential LLM calls (default 25, ChatDev's mean)
by 5 rotating roles: a system prompt of 1,000 tokens shared by every session, then the
session's history, which grows from ~1,000 to ~7,000 tokens, then the role's 60-token
instruction, so prompts are 2-8k tokens and a call shares most of its prompt with the
session's previous call;
outputs are 50-400 tokens (``ignore_eos``); 0-2 s of think time between calls. Sessions
arrive as a Poisson process (``--rate`` per second) and stick to one replica (hash of the
session), so the prefix cache matters. The engine core and the virtual-clock driver are
what is measured; routing is trivial on purpose.

Prints a table and writes JSON (``--out``, default benchmarks/results/virtual_engine_bench.json).

    python benchmarks/virtual_engine_bench.py [--sessions 10000] [--replicas 8] [--rate 4]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

from pythia_server.engine.types import EngineConfig, FinishedRequest, GenerateRequest
from pythia_server.engine.virtual import VirtualCluster

REPO = Path(__file__).resolve().parents[1]
ROLES = 5
SYSTEM_TOKENS = 1000
ROLE_TOKENS = 60


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=25)
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--rate", type=float, default=4.0, help="session arrivals per second")
    parser.add_argument("--kv-tokens", type=int, default=400_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "virtual_engine_bench.json")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    system = list(range(1_000, 1_000 + SYSTEM_TOKENS))
    roles = [list(range(10_000_000 * (r + 1), 10_000_000 * (r + 1) + ROLE_TOKENS)) for r in range(ROLES)]
    replicas = [f"sim-{i}" for i in range(args.replicas)]
    cluster = VirtualCluster(replicas, EngineConfig(max_total_num_tokens=args.kv_tokens, seed=args.seed))
    jct: list[float] = []
    calls_done = [0]
    prompt_tokens = [0]
    cached_tokens = [0]
    output_tokens = [0]

    def start_session(s: int, start_s: float) -> None:
        replica = replicas[s % len(replicas)]
        base = system + list(range(100_000_000 + s * 20_000, 100_000_000 + s * 20_000 + 8_000))
        state = {"call": 0, "history": rng.randint(800, 1200)}

        def next_call() -> None:
            i = state["call"]
            ids = base[: SYSTEM_TOKENS + state["history"]]
            ids.extend(roles[i % ROLES])
            request = GenerateRequest(f"s{s}-c{i}", ids, rng.randint(50, 400), ignore_eos=True)
            cluster.submit(replica, request, done)

        def done(f: FinishedRequest) -> None:
            calls_done[0] += 1
            prompt_tokens[0] += f.prompt_tokens
            cached_tokens[0] += f.cached_tokens
            output_tokens[0] += f.completion_tokens
            state["call"] += 1
            state["history"] = min(state["history"] + rng.randint(150, 350), len(base) - SYSTEM_TOKENS)
            if state["call"] >= args.calls:
                jct.append(cluster.now_s - start_s)
                return
            cluster.call_at(cluster.now_s + rng.uniform(0.0, 2.0), next_call)

        next_call()

    t = 0.0
    for s in range(args.sessions):
        t += rng.expovariate(args.rate)
        cluster.call_at(t, lambda s=s, t=t: start_session(s, t))

    wall_start, cpu_start = time.perf_counter(), time.process_time()
    end_s = cluster.run()
    wall_s, cpu_s = time.perf_counter() - wall_start, time.process_time() - cpu_start

    result = {
        "sessions": args.sessions,
        "calls": calls_done[0],
        "replicas": args.replicas,
        "rate_per_s": args.rate,
        "wall_s": round(wall_s, 2),
        "cpu_s": round(cpu_s, 2),  # the machine is shared: CPU time is the steadier figure
        "virtual_s": round(end_s, 1),
        "events": cluster.events_processed,
        "cpu_us_per_call": round(cpu_s / max(calls_done[0], 1) * 1e6, 1),
        "jct_mean_s": round(statistics.fmean(jct), 2) if jct else None,
        "jct_p95_s": round(sorted(jct)[int(0.95 * (len(jct) - 1))], 2) if jct else None,
        "cache_hit_rate": round(cached_tokens[0] / max(prompt_tokens[0], 1), 4),
        "output_tokens": output_tokens[0],
        "replica_busy_fraction": round(
            sum(cluster.busy_seconds(r) for r in replicas) / (len(replicas) * max(end_s, 1e-9)), 3),
    }
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if calls_done[0] == args.sessions * args.calls else 1


if __name__ == "__main__":
    raise SystemExit(main())
