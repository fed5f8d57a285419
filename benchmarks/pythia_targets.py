"""Issue 6's targets: every policy at the `sglang` baseline's heavy and moderate load points.

Per workload (converted ChatDev, converted Claude Code, generated deep-research fan-out):

1. split the sessions in file order (first half: training, second half: test; each side
   replicated separately with fresh ids, ``replay.heldout``);
2. on the TEST split, calibrate the arrival rate where ``sglang``'s mean JCT is 5x its
   ideal (heavy) and 2x (moderate) by bracketing and bisection (``replay.loadpoints``);
3. train the profiler by replaying the training split under ``pythia`` at the moderate rate;
4. replay every policy on the test split at both rates and at a few more (the JCT-vs-load
   sweep); find the highest rate with mean JCT <= 2x ideal for ``sglang`` and ``pythia``;
5. print the issue's target rows (achieved, target, met or missed) and the per-policy tables.

    python benchmarks/pythia_targets.py [--workdir DIR] [--workloads chatdev,claude-code,deep-research]
        [--sessions N | NAME=N,...] [--replicas N | NAME=N,...] [--seeds 0[,1...]] [--policies a,b]
        [--jobs 2] [--quick] [--json OUT] [--plot-dir DIR]

Workload files are made in ``--workdir`` (a temporary directory by default) with the
commands of docs/policies.md and never committed. One arrival seed by default; with
several, every figure is the mean over seeds (same Poisson seed at every rate, so a curve
is deterministic in the rate: see ``replay.loadpoints``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from pythia_server.cli import main as cli_main
from pythia_server.engine.step_time import StepTimeModel
from pythia_server.engine.types import EngineConfig
from pythia_server.replay.arrivals import PoissonArrivals, apply_arrivals
from pythia_server.replay.bench import format_table, workflow_graphs
from pythia_server.replay.heldout import (
    held_out_split,
    make_bundle,
    profiler_modes,
    train_profiler,
)
from pythia_server.replay.loadpoints import (
    Curve,
    LoadPoint,
    LoadSearch,
    SearchLimits,
    max_rate_within,
    rate_at_ratio,
)
from pythia_server.replay.metrics import RunMetrics, ideal_jct_s, summarize
from pythia_server.replay.runner import ReplayConfig, ReplayRunner
from pythia_server.replay.targets import (
    EQUAL_LATENCY,
    HEAVY,
    MODERATE,
    PEERS,
    PolicyRuns,
    format_targets,
    load_curve_svg,
    markdown_record,
    mean_metrics,
    scale_delays,
    target_rows,
)
from pythia_server.replay.workload import WorkloadRequest, load_workload, session_keys

SHARED = Path(__file__).resolve().parents[2] / "shared" / "workloads"
DEFAULT_POLICIES = ("sglang", *PEERS, "pythia")


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """How a workload is made and sized. ``sessions`` (test split) and ``replicas`` are
    chosen so that 5x ideal is reachable for ``sglang``: ChatDev and Claude Code are
    dominated by tool and think time, so they need many concurrent sessions on one replica."""

    file: str
    make: tuple[str, ...]  # pythia-server arguments writing the file named OUT
    sessions: int
    replicas: int
    start_rate: float  # first guess for the heavy point (sessions/s)
    quick_sessions: int
    delay_scale: float = 1.0  # think and tool time multiplied by this (see WORKLOADS["claude-code"])


# Claude Code sessions last hours (median 67 calls, mean think/tool gap 154 s, long pauses):
# at full length, 5x ideal on one replica needs about 1,500 concurrent sessions and a replay
# costs minutes of CPU. Its think and tool time is therefore divided by 10 (every call,
# prompt, output and prefix kept; the ideal is computed on the same scaled workload);
# --delay-scale claude-code=1 --sessions claude-code=1500 measures the recorded timing.
WORKLOADS = {
    "chatdev": WorkloadSpec(
        "chatdev.jsonl", ("workload", "convert", "--from", "chatdev", str(SHARED / "chatdev_calls.jsonl"),
                          "OUT", "--rate", "0.02", "--seed", "0"),
        sessions=1200, replicas=1, start_rate=1.0, quick_sessions=600),
    "claude-code": WorkloadSpec(
        "claude_code.jsonl", ("workload", "convert", "--from", "claude-code",
                              str(SHARED / "claude_code_calls.jsonl"), "OUT", "--rate", "0.02",
                              "--seed", "0"),
        sessions=250, replicas=1, start_rate=0.1, quick_sessions=120, delay_scale=0.1),
    "deep-research": WorkloadSpec(
        "deep_research.jsonl", ("workload", "generate", "deep-research", "OUT", "--sessions", "200",
                                "--seed", "0", "--rate", "0.5"),
        sessions=400, replicas=2, start_rate=2.0, quick_sessions=200),
}


# ------------------------------------------------------------------ one workload's runs
@dataclass
class _Job:
    """What a worker process needs to replay a policy at a rate (inherited through fork)."""

    test: list[WorkloadRequest]
    ideal: dict[str, float]
    graphs: list
    config: ReplayConfig
    seeds: tuple[int, ...]
    profiler: object | None = None


_JOB: _Job | None = None
_STEP_TIME: StepTimeModel | None = None


def _run(task: tuple[str, float]) -> RunMetrics:
    """Mean figures of ``policy`` at ``rate`` over the seeds (runs in a worker or inline)."""
    global _STEP_TIME
    name, rate = task
    assert _JOB is not None
    if _STEP_TIME is None:
        _STEP_TIME = StepTimeModel.load()
    runs = []
    for seed in _JOB.seeds:
        timed = apply_arrivals(_JOB.test, PoissonArrivals(rate, seed + 1))
        bundle = make_bundle(name, _JOB.profiler, seed=seed, block_size=_JOB.config.block_size, graphs=_JOB.graphs)
        runs.append(summarize(ReplayRunner(timed, bundle, _JOB.config, _STEP_TIME).run(), _JOB.ideal))
    return mean_metrics(runs)


def run_workload(name: str, spec: WorkloadSpec, args: argparse.Namespace, workdir: Path,
                 checkpoint: Callable[[dict], None]) -> dict:
    """Calibrate, train, run, search; returns the workload's JSON record."""
    global _JOB
    started = time.monotonic()
    path = workdir / spec.file
    if not path.exists():
        with contextlib.redirect_stdout(io.StringIO()):
            if cli_main([str(path) if a == "OUT" else a for a in spec.make]) != 0:
                raise SystemExit(f"could not make {path}")
    sessions = int(_per_workload(args.sessions, name, spec.quick_sessions if args.quick else spec.sessions))
    replicas = int(_per_workload(args.replicas, name, spec.replicas))
    delay_scale = _per_workload(args.delay_scale, name, spec.delay_scale)
    requests = scale_delays(load_workload(str(path), block_size=64), delay_scale)
    train, test = held_out_split(requests, 0.5, train_sessions=args.train_sessions, test_sessions=sessions)
    step_time = StepTimeModel.load()
    engine = EngineConfig.from_gpu()
    config = ReplayConfig(replicas=replicas, engine=engine)
    ideal = ideal_jct_s(test, step_time, engine)
    _JOB = _Job(test, ideal, workflow_graphs(test), config, tuple(args.seeds))
    runs = PolicyRuns(_run, args.jobs)
    limits = SearchLimits(rate_tol=0.1 if args.quick else 0.05, ratio_tol=0.05 if args.quick else 0.03,
                          max_evals=8 if args.quick else 12)
    log = _logger(name)
    log(f"{len(session_keys(train))} training / {len(session_keys(test))} test sessions, {replicas} replica(s), "
        f"think/tool time x {delay_scale:g}")

    previous = _previous(args.reuse, name, sessions, replicas, delay_scale, args.seeds)
    if previous is not None:  # only if the engine and replay are unchanged: one sglang run must reproduce
        points = previous["curves"]["sglang"]
        moderate_rate = previous["calibration"]["moderate"]["rate_per_s"]
        old = next((pt for pt in points if pt["rate_per_s"] == moderate_rate), points[0])
        check = _run(("sglang", old["rate_per_s"]))
        if abs(check.jct_mean_s / old["jct_mean_s"] - 1) < 1e-9:
            log(f"reused {runs.reuse(previous, args.rerun)} runs of {args.reuse} "
                f"(sglang at {old['rate_per_s']:g}/s reproduced exactly)")
        else:
            runs.curve("sglang").record(old["rate_per_s"], check)
            log(f"NOT reusing {args.reuse}: sglang at {old['rate_per_s']:g}/s gives {check.jct_mean_s:.3f} s, "
                f"not {old['jct_mean_s']:.3f}")

    sglang = runs.curve("sglang")
    given = _given_points(args.load_points, name)
    if given is None:
        ceiling: LoadPoint | None = sglang(limits.max_rate)  # every session at once: the most sglang is loaded
        log(f"sglang ceiling: {ceiling.x_ideal:.2f}x ideal at {limits.max_rate:g}/s")
        start = spec.start_rate if ceiling.x_ideal >= HEAVY else limits.max_rate
        heavy = rate_at_ratio(sglang, HEAVY, start, limits)
        log(f"sglang heavy (5x): {heavy.status} {heavy.rate_per_s} ({heavy.reason}; {heavy.evaluations} runs)")
        moderate = rate_at_ratio(sglang, MODERATE, min(spec.start_rate, sglang.points()[0].rate_per_s), limits)
    else:  # calibrated by an earlier run: skip the searches
        ceiling = None
        heavy, moderate = (LoadSearch(k, "given", r, None, None, 0, "given (--load-points)")
                           for k, r in zip((HEAVY, MODERATE), given))
        runs.batch([("sglang", r) for r in given])
    log(f"sglang moderate (2x): {moderate.status} {moderate.rate_per_s} ({moderate.reason})")
    train_rate = moderate.rate_per_s or sglang.points()[0].rate_per_s
    _JOB.profiler = train_profiler(apply_arrivals(train, PoissonArrivals(train_rate, args.seeds[0])), config,
                                   step_time)
    modes = profiler_modes(_JOB.profiler)
    log(f"profiler trained at {train_rate:g}/s: {modes}")
    throughput: dict[str, LoadSearch] = {}
    sweep = _sweep_rates(moderate.rate_per_s, heavy.rate_per_s, sglang, args.sweep_extra)

    def snapshot() -> dict:
        return {
            "workload": name, "file": str(path), "train_sessions": len(session_keys(train)),
            "test_sessions": len(session_keys(test)), "replicas": replicas, "seeds": list(args.seeds),
            "delay_scale": delay_scale, "profiler_modes": modes, "train_rate": train_rate,
            "calibration": {"ceiling": asdict(ceiling) if ceiling else None, "heavy": _search_dict(heavy),
                            "moderate": _search_dict(moderate)},
            "throughput": {p: _search_dict(s) for p, s in throughput.items()},
            "targets": target_rows(runs.at, heavy, moderate, throughput, args.pythia),
            "sweep": sweep,
            "at": {label: {"rate": s.rate_per_s, "rows": [m.as_dict() for p in args.policies
                                                             if (m := runs.at(p, s.rate_per_s)) is not None]}
                   for label, s in (("heavy", heavy), ("moderate", moderate)) if s.rate_per_s is not None},
            "curves": {p: [asdict(pt) for pt in c.points()] for p, c in runs.curves.items()},
            "failures": runs.failures,
            "runs": sum(c.evaluations for c in runs.curves.values()),
            "wall_s": round(time.monotonic() - started, 1),
            "complete": False,
        }

    runs.on_run = lambda: checkpoint(snapshot())
    points = [s.rate_per_s for s in (heavy, moderate) if s.rate_per_s is not None]
    # Pythia's runs first: under a long waiting queue they are the slowest to replay
    runs.batch(sorted(((p, r) for r in points for p in args.policies), key=lambda t: t[0] != args.pythia))
    log(f"every policy at the load points {points}")
    for policy in ("sglang", args.pythia):
        if policy in runs.failures or policy not in args.policies:
            continue
        start = moderate.rate_per_s or spec.start_rate
        throughput[policy] = max_rate_within(runs.curve(policy), EQUAL_LATENCY, start, limits)
        log(f"{policy} throughput at <= 2x ideal: {throughput[policy].status} {throughput[policy].rate_per_s} "
            f"({throughput[policy].reason})")
    if not args.no_sweep:
        runs.batch([(p, r) for r in sweep for p in args.policies])
        log(f"sweep {[f'{r:.3g}' for r in sweep]} done")
    record = snapshot()
    record["complete"] = True
    return record


def _given_points(value: str | None, name: str) -> tuple[float, float] | None:
    """``name=HEAVY:MODERATE,...`` rates from an earlier calibration."""
    for item in (value or "").split(","):
        if item.startswith(f"{name}="):
            heavy, moderate = item.split("=", 1)[1].split(":")
            return float(heavy), float(moderate)
    return None


def _per_workload(value: str | None, name: str, default: float) -> float:
    """``N`` for every workload or ``name=N,...``."""
    if not value:
        return default
    if "=" not in value:
        return float(value)
    pairs = dict(item.split("=", 1) for item in value.split(","))
    return float(pairs[name]) if name in pairs else default


def _previous(paths: list[str] | None, name: str, sessions: int, replicas: int, delay_scale: float,
              seeds: list[int]) -> dict | None:
    """This workload's record in previous ``--json`` files (the last one wins), if run with the same settings."""
    found = None
    for path in paths or ():
        for record in json.loads(Path(path).read_text())["workloads"]:
            if (record["workload"], record["test_sessions"], record["replicas"], record.get("delay_scale", 1.0),
                    record["seeds"]) == (name, sessions, replicas, delay_scale, seeds):
                found = record
    return found


def _sweep_rates(moderate: float | None, heavy: float | None, sglang: Curve, extra: int) -> list[float]:
    """Half the moderate rate, the two load points, twice the heavy rate, and ``extra``
    rates spread geometrically between the load points."""
    known = [p.rate_per_s for p in sglang.points()]
    mod = moderate or min(known)
    top = heavy or mod * 2  # no heavy point (its ceiling is below 5x): up to twice the moderate rate
    rates = {mod / 2, mod, top, top * 2} if heavy else {mod / 2, mod, top}
    step = (top / mod) ** (1 / (extra + 1))
    rates.update(mod * step ** i for i in range(1, extra + 1))
    return sorted(float(f"{r:.6g}") for r in rates)


def _search_dict(search: LoadSearch) -> dict:
    out = asdict(search)
    out["point"] = asdict(search.point) if search.point is not None else None
    return out


def _logger(name: str):  # type: ignore[no-untyped-def]
    start = time.monotonic()

    def log(message: str) -> None:
        print(f"[{name} {time.monotonic() - start:6.0f}s] {message}", file=sys.stderr, flush=True)

    return log


def print_record(record: dict) -> None:
    print(f"\n=== {record['workload']}: {record['test_sessions']} test sessions (trained on "
          f"{record['train_sessions']}), {record['replicas']} replica(s), think/tool time x {record['delay_scale']:g}, "
          f"{record['runs']} runs, {record['wall_s']:.0f} s")
    cal = record["calibration"]
    ceiling = cal["ceiling"]
    ratio = f"{ceiling['jct_mean_s'] / ceiling['ideal_jct_mean_s']:.2f}x ideal" if ceiling else "not measured"
    print(f"sglang: ceiling {ratio} (every session at once); heavy (5x): {cal['heavy']['status']} {cal['heavy']['rate_per_s']} sessions/s "
          f"({cal['heavy']['reason']}); moderate (2x): {cal['moderate']['status']} {cal['moderate']['rate_per_s']} "
          f"({cal['moderate']['reason']})")
    print(format_targets(record["targets"]))
    for label, at in record["at"].items():
        print(f"\n{label} load, {at['rate']:g} sessions/s:")
        print(format_table([RunMetrics(**r) for r in at["rows"]]))
    for name, error in record["failures"].items():
        print(f"{name:20s} FAILED {error}")
    sys.stdout.flush()


def _save(records: list[dict], args: argparse.Namespace, wall_s: float, plots: bool = True) -> None:
    if args.plot_dir and plots:
        out = Path(args.plot_dir)
        out.mkdir(parents=True, exist_ok=True)
        for record in records:
            title = (f"{record['workload']}: mean JCT / ideal vs load ({record['test_sessions']} test sessions, "
                     f"{record['replicas']} replica(s))")
            heavy = record["calibration"]["heavy"]["rate_per_s"]
            top = max(record["sweep"]) if record.get("sweep") else (2 * heavy if heavy else None)
            svg = load_curve_svg(record["curves"], title, top)
            (out / f"targets_{record['workload'].replace('-', '_')}.svg").write_text(svg)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write("\n\n".join(f"**{r['workload']}** ({r['test_sessions']} test sessions, {r['replicas']} "
                                   f"replica(s), think/tool time x {r['delay_scale']:g})\n\n{markdown_record(r)}"
                                   for r in records) + "\n")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"argv": sys.argv[1:], "wall_s": round(wall_s, 1), "workloads": records}, fh, indent=1,
                      default=str)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="where workload files are made (default: a temporary directory)")
    parser.add_argument("--workloads", default="deep-research,chatdev,claude-code")
    parser.add_argument("--sessions", help="test sessions: N, or name=N,... (defaults: see WORKLOADS)")
    parser.add_argument("--train-sessions", type=int, default=100, help="training sessions (replicated or cut)")
    parser.add_argument("--replicas", help="N, or name=N,...")
    parser.add_argument("--delay-scale", help="think/tool time factor: F, or name=F,... (claude-code: 0.1)")
    parser.add_argument("--seeds", default="0", help="arrival seeds; figures are means over them")
    parser.add_argument("--policies", default=",".join(DEFAULT_POLICIES))
    parser.add_argument("--pythia", default="pythia", help="the Pythia bundle the targets are read for")
    parser.add_argument("--sweep-extra", type=int, default=0,
                        help="sweep rates between the load points, besides moderate/2, moderate, heavy, heavy x 2")
    parser.add_argument("--jobs", type=int, default=2, help="replays in parallel (processes)")
    parser.add_argument("--quick", action="store_true", help="fewer sessions, coarser searches")
    parser.add_argument("--load-points", metavar="NAME=HEAVY:MODERATE,...",
                        help="skip sglang's calibration for these workloads (rates from an earlier run)")
    parser.add_argument("--no-sweep", action="store_true", help="only the load points and the throughput searches")
    parser.add_argument("--reuse", metavar="JSON", nargs="+", help="take the runs of previous --json files for the "
                        "policies not named by --rerun (checked: sglang's heavy run must reproduce exactly)")
    parser.add_argument("--rerun", default="pythia", help="policy name prefixes to run afresh with --reuse")
    parser.add_argument("--from-json", metavar="JSON", nargs="+", help="run nothing: print and plot these results")
    parser.add_argument("--json", metavar="OUT")
    parser.add_argument("--plot-dir", metavar="DIR")
    parser.add_argument("--markdown", metavar="OUT", help="the tables as Markdown (as in docs/benchmarks.md)")
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.policies = [p for p in args.policies.split(",") if p]
    args.rerun = [p for p in args.rerun.split(",") if p]
    for needed in ("sglang", args.pythia):
        if needed not in args.policies:
            parser.error(f"--policies must include {needed}")
    names = [w for w in args.workloads.split(",") if w]
    unknown = [w for w in names if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; known: {', '.join(WORKLOADS)}")
    started = time.monotonic()
    records: list[dict] = []
    if args.from_json:  # render earlier results (several files are merged, later ones win per workload)
        merged = {r["workload"]: r for path in args.from_json for r in json.loads(Path(path).read_text())["workloads"]}
        records = [merged[n] for n in names if n in merged]
        for record in records:
            print_record(record)
        _save(records, args, sum(r["wall_s"] for r in records))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for name in names:  # each workload printed and saved as soon as it is done
            def checkpoint(partial: dict) -> None:  # every finished run is saved at once
                _save([*records, partial], args, time.monotonic() - started, plots=False)

            records.append(run_workload(name, WORKLOADS[name], args, workdir, checkpoint))
            print_record(records[-1])
            _save(records, args, time.monotonic() - started)
    print(f"\ntotal wall time {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
