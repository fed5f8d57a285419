"""KV events over ZMQ on loopback: publisher -> subscriber throughput, and the index's lookup cost.

Run: ``python benchmarks/kv_events_bench.py [--batches 5000] [--replicas 8] [--json OUT]``.
One `KvEventPublisher` (the simulated engine's side) sends `--batches` batches the way
SGLang does per scheduler step (one BlockStored of 4 pages of 64 tokens, and every fourth
batch a BlockRemoved of an older page); a `KvEventHub` subscriber applies them to its
`PrefixIndex`. Reports batches/s and events/s end to end (one process, both sides on the
same 2 cores), then the cost of `matched_blocks` for a 128-block call against `--replicas`
replicas each holding 2,000 blocks. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from pythia_server.engine.events import BlockRemoved, BlockStored
from pythia_server.sglang_backend.kv_events import KvEventPublisher
from pythia_server.sglang_backend.kv_index import KvEventHub, PrefixIndex
from pythia_server.sglang_backend.launcher import free_ports
from pythia_server.tokens import block_hashes

BLOCK = 64


def make_events(batches: int) -> list[list[object]]:
    out: list[list[object]] = []
    stored: list[int] = []
    for i in range(batches):
        tokens = [(i * 7919 + k) % 128000 for k in range(4 * BLOCK)]
        hashes = block_hashes(tokens, BLOCK)
        batch: list[object] = [BlockStored(hashes, None, tokens, BLOCK)]
        stored.extend(hashes)
        if i % 4 == 3:
            batch.append(BlockRemoved([stored.pop(0)]))
        out.append(batch)
    return out


async def throughput(batches: int) -> dict[str, float]:
    pub, replay = free_ports(2)
    publisher = KvEventPublisher(f"tcp://127.0.0.1:{pub}", f"tcp://127.0.0.1:{replay}")
    hub = KvEventHub()
    await hub.attach("r0", f"tcp://127.0.0.1:{pub}", f"tcp://127.0.0.1:{replay}")
    events = make_events(batches)
    n_events = sum(len(b) for b in events)
    await asyncio.sleep(0.2)  # let the SUB connection settle
    start = time.perf_counter()
    for batch in events:
        for event in batch:
            publisher(event)  # type: ignore[arg-type]
        await asyncio.sleep(0)
    while hub.stats()["r0"].events < n_events:
        await asyncio.sleep(0.001)
        if time.perf_counter() - start > 120:
            break
    elapsed = time.perf_counter() - start
    stats = hub.stats()["r0"]
    on_wire = publisher.published_batches
    await hub.close()
    publisher.close()
    return {
        "steps_fed": batches,
        "batches_on_wire": on_wire,  # events queued together leave as one batch, as in SGLang
        "batches_applied": stats.batches,
        "events": stats.events,
        "seconds": elapsed,
        "events_per_s": stats.events / elapsed,
        "gaps": stats.gaps,
        "resets": stats.resets,
    }


def lookup_cost(replicas: int) -> dict[str, float]:
    index = PrefixIndex()
    for r in range(replicas):
        tokens = [(r * 31 + k) % 128000 for k in range(2000 * BLOCK)]
        index.apply(f"r{r}", [BlockStored(block_hashes(tokens, BLOCK), None, tokens, BLOCK)])
    call = block_hashes([(3 * 31 + k) % 128000 for k in range(128 * BLOCK)], BLOCK)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(2000):
            index.best(call)
        best = min(best, (time.perf_counter() - start) / 2000)
    return {"replicas": replicas, "call_blocks": len(call), "us_per_call_all_replicas": best * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=5000)
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--json", default="kv_events_bench.json")
    args = parser.parse_args()
    result = {"throughput": asyncio.run(throughput(args.batches)), "lookup": lookup_cost(args.replicas)}
    t, lk = result["throughput"], result["lookup"]
    print(f"{'measure':<44}{'value':>14}")
    print(f"{'steps fed':<44}{t['steps_fed']:>14,}")
    print(f"{'batches on the wire / applied':<44}{t['batches_on_wire']:>7} / {t['batches_applied']:<5}")
    print(f"{'events applied':<44}{t['events']:>14,}")
    print(f"{'events/s end to end (pub + sub, one process)':<44}{t['events_per_s']:>14,.0f}")
    print(f"{'gaps / resets':<44}{t['gaps']:>7} / {t['resets']:<5}")
    label = f"index.best(), 128-block call, {lk['replicas']} replicas (us)"
    print(f"{label:<44}{lk['us_per_call_all_replicas']:>14.1f}")
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
