"""Decision cost of every baseline bundle: route + priority + cache hints per call.

Run: ``python benchmarks/baselines_bench.py [--calls 20000] [--replicas 8] [--json OUT]``.
Drives each ``make_policy`` bundle the way a driver does (route, priority, ``on_start``;
``on_finish`` on all three once 64 calls are in flight) over synthetic ChatDev-shaped
sessions: 25 calls, five agents in a loop, a 20-block role prefix plus a growing session
history (64-token blocks). Also times one eviction sort key for the bundles with cache
hints. Prints a table (microseconds per call, best of three) and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import deque

from pythia_sdk.protocol import AgentTags
from pythia_server.policy import POLICY_NAMES, CacheOwner, CallInfo, CallOutcome, ReplicaView, make_policy
from pythia_server.policy.baselines import WorkflowGraph, node_sort_key

AGENTS = ("ceo", "cto", "programmer", "reviewer", "tester")
BLOCK = 64
IN_FLIGHT = 64


def make_calls(n: int) -> list[CallInfo]:
    calls = []
    for i in range(n):
        session, agent = i // 25, AGENTS[i % len(AGENTS)]
        role = [hash((agent, k)) & 0xFFFFFFFF for k in range(20)]
        history = [hash((session, k)) & 0xFFFFFFFF for k in range(i % 25 * 3)]
        hashes = tuple(role + history)
        tags = AgentTags("chatdev", f"s{session}", agent)
        calls.append(CallInfo(str(i), tags, len(hashes) * BLOCK + 10, hashes, arrival_s=i * 0.01))
    return calls


def run(name: str, calls: list[CallInfo], replicas: list[ReplicaView]) -> float:
    bundle = make_policy(name, graphs=[WorkflowGraph.chain("chatdev", AGENTS, loop=True)], block_size=BLOCK)
    in_flight: deque[tuple[CallInfo, str]] = deque()
    start = time.perf_counter()
    for call in calls:
        now = call.arrival_s
        replica = bundle.router.route(call, replicas, now).replica_id
        if bundle.priority is not None:
            bundle.priority.priority(call, now)
        if bundle.cache_hints is not None:
            bundle.cache_hints.on_start(call, replica, now)
        in_flight.append((call, replica))
        if len(in_flight) > IN_FLIGHT:
            done, where = in_flight.popleft()
            bundle.router.on_finish(done, where, now)
            outcome = CallOutcome(done, where, done.prompt_tokens, 0, 100, 0.1, 1.0, now)
            if bundle.priority is not None:
                bundle.priority.on_finish(outcome, now)
            if bundle.cache_hints is not None:
                bundle.cache_hints.on_finish(outcome, now)
    return (time.perf_counter() - start) / len(calls) * 1e6


def sort_key_us(name: str, calls: list[CallInfo], replicas: list[ReplicaView]) -> float | None:
    bundle = make_policy(name, graphs=[WorkflowGraph.chain("chatdev", AGENTS, loop=True)], block_size=BLOCK)
    hints = bundle.cache_hints
    if hints is None:
        return None
    for call in calls[:2000]:
        hints.on_start(call, "r0", call.arrival_s)
    owners = [CacheOwner("chatdev", f"s{i // 25}", AGENTS[i % 5]) for i in range(1900, 2000)]
    start = time.perf_counter()
    for _ in range(50):
        for owner in owners:
            node_sort_key(hints, [owner], 0.0, 30.0)
    return (time.perf_counter() - start) / (50 * len(owners)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--json", default="baselines_bench.json", help="where to write the results")
    args = parser.parse_args()
    rng = random.Random(0)
    replicas = [
        ReplicaView(f"r{i}", cached_prefix_tokens=rng.randrange(4096), total_kv_tokens=500_000, free_kv_tokens=250_000)
        for i in range(args.replicas)
    ]
    calls = make_calls(args.calls)
    rows = []
    for name in POLICY_NAMES:
        per_call = min(run(name, calls, replicas) for _ in range(3))
        rows.append(
            {"policy": name, "us_per_call": round(per_call, 1), "sort_key_us": sort_key_us(name, calls, replicas)}
        )
    print(f"{'policy':15s} {'us/call':>8s} {'sort key us':>12s}")
    for row in rows:
        key = "-" if row["sort_key_us"] is None else f"{row['sort_key_us']:.1f}"
        print(f"{row['policy']:15s} {row['us_per_call']:8.1f} {key:>12s}")
    with open(args.json, "w") as out:
        json.dump({"calls": args.calls, "replicas": args.replicas, "results": rows}, out, indent=2)


if __name__ == "__main__":
    main()
