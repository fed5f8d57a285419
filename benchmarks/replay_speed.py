"""Speed of the instrument: 10,000 ChatDev-sized workflow runs on 8 replicas, one core.

Run: ``python benchmarks/replay_speed.py [--sessions 10000] [--replicas 8] [--rate 4]
[--policy sglang] [--json replay_speed.json]``. The converted ChatDev workload (40 recorded
runs, ``workload convert --from chatdev``) is replicated to ``--sessions`` runs (fresh ids,
shared role prompts kept) and re-timed as Poisson arrivals; the replay (calls routed,
engines stepped, results recorded) and the ideal-JCT computation are timed separately
with ``time.process_time`` (CPU seconds of this one process). Target (issue 4): < 60 s.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from pythia_server.engine.step_time import StepTimeModel
from pythia_server.engine.types import EngineConfig
from pythia_server.policy import make_policy
from pythia_server.replay.bench import prepare_workload
from pythia_server.replay.converters.chatdev import convert_chatdev, read_chatdev
from pythia_server.replay.metrics import ideal_jct_s, summarize
from pythia_server.replay.runner import ReplayConfig, ReplayRunner
from pythia_server.replay.workload import save_workload

CHATDEV = Path(__file__).resolve().parents[2] / "shared" / "workloads" / "chatdev_calls.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--rate", type=float, default=4.0, help="Poisson sessions/s")
    parser.add_argument("--policy", default="sglang")
    parser.add_argument("--source", default=str(CHATDEV), help="recorded ChatDev calls (shared/workloads)")
    parser.add_argument("--json", default="replay_speed.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        converted = Path(tmp) / "chatdev.jsonl"
        save_workload(convert_chatdev(read_chatdev(args.source)), converted)
        requests = prepare_workload(str(converted), sessions=args.sessions, rate=args.rate)
    step_time = StepTimeModel.load()
    engine = EngineConfig.from_gpu()
    start = time.process_time()
    result = ReplayRunner(requests, make_policy(args.policy), ReplayConfig(replicas=args.replicas, engine=engine),
                          step_time).run()
    replay_s = time.process_time() - start
    start = time.process_time()
    ideal = ideal_jct_s(requests, step_time, engine)
    ideal_s = time.process_time() - start
    metrics = summarize(result, ideal)
    row = {
        "sessions": metrics.sessions, "requests": metrics.requests, "replicas": args.replicas,
        "rate_per_s": args.rate, "policy": args.policy, "replay_cpu_s": round(replay_s, 2),
        "ideal_cpu_s": round(ideal_s, 2), "events": result.events, "virtual_s": round(metrics.makespan_s, 1),
        "jct_mean_s": round(metrics.jct_mean_s, 2), "ideal_jct_mean_s": round(metrics.ideal_jct_mean_s, 2),
        "cache_hit_rate": round(metrics.cache_hit_rate, 3), "preemptions": metrics.preemptions,
        "target_s": 60.0, "meets_target": replay_s + ideal_s < 60.0,
    }
    width = max(len(k) for k in row)
    for key, value in row.items():
        print(f"{key:<{width}}  {value}")
    Path(args.json).write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
