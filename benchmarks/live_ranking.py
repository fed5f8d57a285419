"""Issue 6: the live path (gateway + simulated engine servers) reproduces the offline ranking.

One small generated deep-research workload (planner -> 3-5 parallel searchers with tool
rounds -> aggregator), Poisson session arrivals, two replicas. Its sessions are split in
order: the first ``--train-sessions`` teach Pythia's profiler, the rest are measured.

- offline: ``ReplayRunner`` per policy on the measured split (engine config as the live
  sims get it: page size = block size, the bundle's ``EngineSettings``, the session radix
  cache when the bundle has cache hints; priority asked once, as live). Pythia starts from
  a copy of the profiler trained by replaying the training split under ``pythia``;
- live: per policy, ``pythia-server serve --backend sim --speedup S --policy P
  --no-assemble`` and a real ``openai`` client (``replay/live.py``). Pythia is trained the way a deployed gateway is:
  the training split is replayed through that same gateway first (its profiler learns from
  the calls and the sessions' root spans), then the replicas' caches are flushed and the
  measured split is replayed (the profiler's modes are printed). Each policy runs
  ``--repeats`` times live, interleaved (every policy once, then again), so a busy spell
  of the shared machine falls on all of them; live figures are the mean over repeats.

Ranking: by mean JCT (engine seconds). Noise = the largest |live - offline| / offline mean
JCT of any single live run: how far the live path strayed from the replay for any policy
in any repeat. A pair is "resolved" when its offline gap exceeds that noise; the ranking is
reproduced when every resolved pair keeps its order live (the exit status is 1 otherwise).

    python benchmarks/live_ranking.py [--policies sglang,sglang-router,pythia] [--sessions 40]
        [--train-sessions 30] [--rate 2] [--replicas 2] [--speedup 2] [--repeats 2] [--assemble]
        [--seed 0] [--json OUT]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pythia_server.replay.arrivals import PoissonArrivals, apply_arrivals
from pythia_server.replay.generators.deep_research import generate_deep_research
from pythia_server.replay.live import LiveRun, run_policies_offline, run_policy_live
from pythia_server.replay.metrics import RunMetrics, percentile
from pythia_server.replay.transforms import split_sessions
from pythia_server.replay.workload import WorkloadRequest


@dataclass(frozen=True, slots=True)
class Row:
    policy: str
    offline_mean_s: float
    offline_p95_s: float
    offline_hit: float
    live_means_s: tuple[float, ...]  # one per repeat
    live_p95s_s: tuple[float, ...]
    live_hit: float  # over all repeats
    live_wall_s: float  # per repeat, on average
    modes: dict[str, str]  # the live profiler's view after training (Pythia only; last repeat)

    @property
    def live_mean_s(self) -> float:
        return sum(self.live_means_s) / len(self.live_means_s)

    @property
    def live_p95_s(self) -> float:
        return sum(self.live_p95s_s) / len(self.live_p95s_s)

    @property
    def diff(self) -> float:
        return self.live_mean_s / self.offline_mean_s - 1.0

    @property
    def worst_diff(self) -> float:
        """The largest |live - offline| / offline mean JCT of any one repeat."""
        return max(abs(m / self.offline_mean_s - 1.0) for m in self.live_means_s)


def workload(train_sessions: int, sessions: int, rate: float, seed: int) -> tuple[list[WorkloadRequest], ...]:
    """Training and measured splits of one generation (distinct session ids), Poisson starts."""
    requests = generate_deep_research(train_sessions + sessions, seed)
    train, test = split_sessions(requests, train_sessions / (train_sessions + sessions))
    return apply_arrivals(train, PoissonArrivals(rate, seed)), apply_arrivals(test, PoissonArrivals(rate, seed + 1))


def _row(name: str, offline: RunMetrics, runs: list[tuple[LiveRun, dict[str, str]]]) -> Row:
    means, p95s = [], []
    for run, _ in runs:
        jct = sorted(run.jct_s.values())
        means.append(sum(jct) / len(jct))
        p95s.append(percentile(jct, 95))
    prompt = sum(run.prompt_tokens for run, _ in runs)
    hit = sum(run.cached_tokens for run, _ in runs) / prompt if prompt else 0.0
    return Row(name, offline.jct_mean_s, offline.jct_p95_s, offline.cache_hit_rate, tuple(means), tuple(p95s),
               hit, sum(run.wall_s for run, _ in runs) / len(runs), runs[-1][1])


def ranks(values: dict[str, float]) -> dict[str, int]:
    return {name: i + 1 for i, name in enumerate(sorted(values, key=values.__getitem__))}


def verdict(rows: list[Row]) -> dict[str, Any]:
    """Pairs whose offline gap exceeds the noise, and whether live keeps their order."""
    noise = max(r.worst_diff for r in rows)
    pairs = []
    for a, b in itertools.combinations(rows, 2):
        better, worse = (a, b) if a.offline_mean_s <= b.offline_mean_s else (b, a)
        gap = worse.offline_mean_s / better.offline_mean_s - 1.0
        live_gap = worse.live_mean_s / better.live_mean_s - 1.0
        pairs.append({"better": better.policy, "worse": worse.policy, "offline_gap": gap, "live_gap": live_gap,
                      "resolved": gap > noise, "kept": live_gap > 0})
    resolved = [p for p in pairs if p["resolved"]]
    return {"noise": noise, "pairs": pairs, "resolved_pairs": len(resolved),
            "reproduced": all(p["kept"] for p in resolved), "all_pairs_kept": all(p["kept"] for p in pairs)}


def table(rows: list[Row]) -> str:
    off = ranks({r.policy: r.offline_mean_s for r in rows})
    on = ranks({r.policy: r.live_mean_s for r in rows})
    header = ("| policy | offline mean JCT s | offline p95 s | live mean JCT s | live p95 s | offline rank | "
              "live rank | live vs offline (mean) | hit rate offline / live |")
    lines = [header,
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: off[r.policy]):
        lines.append(f"| {r.policy} | {r.offline_mean_s:.2f} | {r.offline_p95_s:.2f} | {r.live_mean_s:.2f} | "
                     f"{r.live_p95_s:.2f} | {off[r.policy]} | {on[r.policy]} | {r.diff:+.1%} | "
                     f"{r.offline_hit:.3f} / {r.live_hit:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", default="sglang,sglang-router,pythia")
    parser.add_argument("--sessions", type=int, default=40, help="measured sessions")
    parser.add_argument("--train-sessions", type=int, default=30, help="sessions that train Pythia first")
    parser.add_argument("--rate", type=float, default=2.0, help="Poisson session starts per engine second")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--speedup", type=float, default=2.0, help="engine seconds per wall second, live")
    parser.add_argument("--assemble", action="store_true",
                        help="let the gateway turn each call into a stream and assemble it (its default); off here: "
                             "relaying every token costs CPU the shared machine then lacks (see docs/benchmarks.md)")
    parser.add_argument("--repeats", type=int, default=2, help="live runs per policy, interleaved (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args(argv)
    policies = [p for p in args.policies.split(",") if p]
    if len(policies) < 2 or min(args.sessions, args.train_sessions, args.repeats) < 1 or args.speedup <= 0:
        parser.error("need two or more policies, --sessions, --train-sessions and --repeats >= 1, --speedup > 0")

    train, test = workload(args.train_sessions, args.sessions, args.rate, args.seed)
    t0 = time.perf_counter()
    metrics = run_policies_offline(policies, train, test, replicas=args.replicas, seed=args.seed)
    print(f"offline: {len(policies)} policies in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    serve_args = () if args.assemble else ("--no-assemble",)
    runs: dict[str, list[tuple[LiveRun, dict[str, str]]]] = {name: [] for name in policies}
    with tempfile.TemporaryDirectory(prefix="pythia-live-ranking-") as tmp:
        for repeat in range(args.repeats):  # interleaved, so a busy spell of the machine hits every policy
            for name in policies:
                run, modes = run_policy_live(name, train, test, replicas=args.replicas, speedup=args.speedup,
                                             workdir=Path(tmp) / f"{name}-{repeat}", serve_args=serve_args)
                runs[name].append((run, modes))
                mean = sum(run.jct_s.values()) / len(run.jct_s)
                print(f"live {name} #{repeat + 1}: {run.wall_s:.0f} s wall, mean JCT {mean:.2f} s "
                      f"({mean / metrics[name].jct_mean_s - 1:+.1%} vs offline)"
                      + (f", profiler modes {modes}" if modes else ""), file=sys.stderr)
    rows = [_row(name, metrics[name], runs[name]) for name in policies]
    result = verdict(rows)
    print(f"deep research: {args.sessions} measured sessions ({len(test)} calls) after {args.train_sessions} "
          f"training sessions, {args.rate}/s Poisson, {args.replicas} replicas, live at speedup {args.speedup}, "
          f"{args.repeats} live run(s) per policy (live figures: their mean), "
          f"{'assembled streams' if args.assemble else 'calls forwarded whole (--no-assemble)'}")
    print(table(rows))
    print(f"noise (largest |live - offline| mean JCT of any live run): {result['noise']:.1%}; pairs with a larger "
          f"offline gap: {result['resolved_pairs']} of {len(result['pairs'])}; ranking reproduced: "
          f"{result['reproduced']}; every pair's order kept: {result['all_pairs_kept']}")
    for p in result["pairs"]:
        print(f"  {p['better']} < {p['worse']}: offline gap {p['offline_gap']:+.1%}, live {p['live_gap']:+.1%}"
              f"{'' if p['resolved'] else ' (within noise)'}")
    if args.json:
        body = {"workload": "deep-research", "sessions": args.sessions, "train_sessions": args.train_sessions,
                "calls": len(test), "rate": args.rate, "replicas": args.replicas, "speedup": args.speedup,
                "repeats": args.repeats, "assemble": args.assemble, "seed": args.seed,
                "rows": [{**{k: getattr(r, k) for k in Row.__slots__}, "live_mean_s": r.live_mean_s,
                          "live_p95_s": r.live_p95_s, "diff": r.diff, "worst_diff": r.worst_diff} for r in rows],
                **result}
        Path(args.json).write_text(json.dumps(body, indent=2) + "\n")
    return 0 if result["reproduced"] else 1


if __name__ == "__main__":
    sys.exit(main())
