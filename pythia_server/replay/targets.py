"""Issue 6's target rows, read from runs at the ``sglang`` baseline's load points.

``benchmarks/pythia_targets.py`` finds the load points (``replay.loadpoints``) and runs
every policy there (:class:`PolicyRuns`: memoised runs, batches in a process pool); this
module turns those runs into the issue's rows (achieved, goal, met), prints them, and draws
the JCT-vs-load plot. Also the two small transforms the
benchmark needs: the mean of runs over arrival seeds, and scaling a workload's think and
tool time (Claude Code's hours of it make its heavy point unaffordable to replay).
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import fields, replace
from typing import Any

from pythia_server.replay.bench import lines_svg
from pythia_server.replay.loadpoints import Curve, LoadPoint, LoadSearch
from pythia_server.replay.metrics import RunMetrics
from pythia_server.replay.workload import WorkloadRequest, session_key

__all__ = [
    "EQUAL_LATENCY",
    "HEAVY",
    "MODERATE",
    "PEERS",
    "PolicyRuns",
    "format_targets",
    "load_curve_svg",
    "markdown_record",
    "mean_metrics",
    "scale_delays",
    "target_rows",
]

HEAVY, MODERATE, EQUAL_LATENCY = 5.0, 2.0, 2.0  # x ideal of sglang's load points; throughput bound
PEERS = ("sglang-router", "autellix", "kvflow", "continuum", "dynamo-kv")

RunAt = Callable[[str, float], "RunMetrics | None"]


class PolicyRuns:
    """Every (policy, rate) run of one workload, memoised in one :class:`Curve` per policy.

    ``run((policy, rate))`` replays one; it must be a module-level function, because
    batches of independent runs go to a forked process pool (workers inherit the caller's
    state, e.g. the workload).
    """

    def __init__(self, run: Callable[[tuple[str, float]], RunMetrics], jobs: int = 1) -> None:
        self.run = run
        self.jobs = jobs
        self.curves: dict[str, Curve] = {}
        self.failures: dict[str, str] = {}
        self.on_run: Callable[[], None] | None = None  # e.g. save a checkpoint

    def curve(self, name: str) -> Curve:
        if name not in self.curves:
            curve = Curve(lambda rate, name=name: self.run((name, rate)))
            curve.on_record = self._changed  # searches' runs are saved too, not only batches'
            self.curves[name] = curve
        return self.curves[name]

    def _changed(self) -> None:
        if self.on_run is not None:
            self.on_run()

    def batch(self, tasks: list[tuple[str, float]]) -> None:
        """Run what is not memoised yet; each run is recorded (and ``on_run`` called) as it ends."""
        todo = [(n, r) for n, r in tasks if n not in self.failures and not self.curve(n).has(r)]
        if self.jobs > 1 and len(todo) > 1:
            with ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("fork")) as pool:
                # forked: workers inherit _JOB
                futures = {pool.submit(self.run, task): task for task in todo}
                for future in as_completed(futures):
                    try:
                        self._record(futures[future], future.result())
                    except RuntimeError as exc:  # an engine fault must not hide the other rows
                        self._record(futures[future], exc)
        else:
            for task in todo:
                try:
                    self._record(task, self.run(task))
                except RuntimeError as exc:
                    self._record(task, exc)

    def _record(self, task: tuple[str, float], outcome: RunMetrics | Exception) -> None:
        name, rate = task
        if isinstance(outcome, Exception):
            self.failures[name] = f"at {rate:g}/s: {outcome}"
            print(f"  {name} failed {self.failures[name]}", file=sys.stderr)
            self._changed()
        else:
            self.curve(name).record(rate, outcome)  # calls _changed

    def reuse(self, record: dict, rerun: list[str]) -> int:
        """Preload the runs of a previous record (``--json`` of this script) for every policy
        except those matching a ``rerun`` prefix; returns how many runs were taken."""
        full = {(row["policy"], at["rate"]): RunMetrics(**row) for at in record["at"].values() for row in at["rows"]}
        taken = 0
        for name, points in record["curves"].items():
            if any(name.startswith(prefix) for prefix in rerun):
                continue
            for pt in points:
                self.curve(name).record(pt["rate_per_s"], full.get((name, pt["rate_per_s"])) or LoadPoint(**pt))
                taken += 1
        return taken

    def at(self, name: str, rate: float) -> RunMetrics | None:
        if name in self.failures or not self.curve(name).has(rate):
            return None
        return self.curve(name).figures(rate)  # type: ignore[return-value]


def target_rows(
    at: RunAt, heavy: LoadSearch, moderate: LoadSearch, throughput: dict[str, LoadSearch], pythia: str = "pythia"
) -> list[dict[str, Any]]:
    """One row per target: ``{"target", "achieved", "goal", "met", "note"}``; ``achieved``
    and ``met`` are None where a load point or a run is missing (the note says why)."""
    rows: list[dict[str, Any]] = []

    def row(label: str, achieved: float | None, goal: str, met: bool, note: str = "") -> None:
        rows.append({"target": label, "achieved": achieved, "goal": goal,
                     "met": None if achieved is None else met, "note": note})

    h = heavy.rate_per_s
    base = at("sglang", h) if h else None
    mine = at(pythia, h) if h else None
    if h is None or base is None or mine is None:
        why = f"no heavy point: {heavy.reason}" if h is None else "a run is missing (failed or not run)"
        for label, goal in (("heavy: sglang mean / pythia mean", ">= 3"), ("heavy: pythia mean x ideal", "<= 1.67"),
                            ("heavy: sglang p95 / pythia p95", ">= 2"),
                            ("heavy: best peer mean / pythia mean", ">= 1.3")):
            row(label, None, goal, False, why)
    else:
        ratio = base.jct_mean_s / mine.jct_mean_s
        row("heavy: sglang mean / pythia mean", ratio, ">= 3", ratio >= 3.0,
            f"at {h:.3g}/s (sglang {base.jct_over_ideal:.2f}x ideal)")
        row("heavy: pythia mean x ideal", mine.jct_over_ideal, "<= 1.67", mine.jct_over_ideal <= 1.67)
        p95 = base.jct_p95_s / mine.jct_p95_s
        row("heavy: sglang p95 / pythia p95", p95, ">= 2", p95 >= 2.0)
        peers = [m for p in PEERS if (m := at(p, h)) is not None]
        best = min(peers, key=lambda m: m.jct_mean_s, default=None)
        over = best.jct_mean_s / mine.jct_mean_s if best else None
        row("heavy: best peer mean / pythia mean", over, ">= 1.3", over is not None and over >= 1.3,
            f"best peer {best.policy}" if best else "no peer ran")
    m = moderate.rate_per_s
    mine = at(pythia, m) if m else None
    if m is None or mine is None:
        row("moderate: pythia mean x ideal", None, "<= 1.2", False,
            f"no moderate point: {moderate.reason}" if m is None else "a run is missing (failed or not run)")
    else:
        row("moderate: pythia mean x ideal", mine.jct_over_ideal, "<= 1.2", mine.jct_over_ideal <= 1.2,
            f"at {m:.3g}/s")
    a, b = throughput.get(pythia), throughput.get("sglang")
    if a is None or b is None or a.rate_per_s is None or b.rate_per_s is None:
        row("throughput at <= 2x ideal: pythia / sglang", None, ">= 2", False, "a search found no rate")
    elif b.status == "unreachable":  # sglang itself never exceeded 2x: the workload is too small to tell
        row("throughput at <= 2x ideal: pythia / sglang", None, ">= 2", False, f"sglang: {b.reason}")
    else:
        ratio = a.rate_per_s / b.rate_per_s
        bound = " (pythia never above 2x: a lower bound)" if a.status == "unreachable" else ""
        row("throughput at <= 2x ideal: pythia / sglang", ratio, ">= 2", ratio >= 2.0,
            f"{a.rate_per_s:.3g} vs {b.rate_per_s:.3g} sessions/s{bound}")
    return rows


def format_targets(rows: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'target':44s} {'achieved':>9s} {'goal':>8s}  result   note", "-" * 100]
    for r in rows:
        achieved = "-" if r["achieved"] is None else f"{r['achieved']:.2f}"
        result = "n/a" if r["met"] is None else ("met" if r["met"] else "MISSED")
        lines.append(f"{r['target']:44s} {achieved:>9s} {r['goal']:>8s}  {result:7s}  {r['note']}")
    return "\n".join(lines)


def load_curve_svg(curves: dict[str, list[dict[str, float]]], title: str, max_rate: float | None = None) -> str:
    """Mean JCT / ideal against rate, one line per policy, 5x and 2x dashed; points above
    ``max_rate`` (the ceiling probe) left out so the load range stays readable."""
    series = {p: [(pt["rate_per_s"], pt["jct_mean_s"] / pt["ideal_jct_mean_s"]) for pt in pts
                  if max_rate is None or pt["rate_per_s"] <= max_rate]
              for p, pts in curves.items()}
    series = {p: pts for p, pts in series.items() if pts}
    rates = [r for pts in series.values() for r, _ in pts]
    if rates:
        series["5x ideal"] = [(min(rates), HEAVY), (max(rates), HEAVY)]
        series["2x ideal"] = [(min(rates), MODERATE), (max(rates), MODERATE)]
    return lines_svg(series, title, "mean JCT / ideal JCT", dashed=("5x ideal", "2x ideal"))


def mean_metrics(runs: Sequence[RunMetrics]) -> RunMetrics:
    """Field-wise mean of runs of one policy (counts rounded): a figure over arrival seeds."""
    if len(runs) == 1:
        return runs[0]
    out: dict[str, Any] = {}
    for f in fields(RunMetrics):
        values = [getattr(r, f.name) for r in runs]
        if isinstance(values[0], str):
            out[f.name] = values[0]
        elif isinstance(values[0], int):
            out[f.name] = round(sum(values) / len(values))
        else:
            out[f.name] = sum(values) / len(values)
    return RunMetrics(**out)


def scale_delays(requests: Sequence[WorkloadRequest], factor: float) -> list[WorkloadRequest]:
    """Think and tool time (dependency delays, roots' offsets in their session) x ``factor``;
    calls, prompts, outputs and prefixes unchanged."""
    if factor <= 0:
        raise ValueError("the delay factor must be positive")
    if factor == 1.0:
        return list(requests)
    origin: dict[str, float] = {}
    for r in requests:
        if r.is_root and r.timestamp_ms is not None:
            key = session_key(r)
            origin[key] = min(origin.get(key, r.timestamp_ms), r.timestamp_ms)

    def scaled(value: float | None) -> float | None:
        return None if value is None else value * factor

    out = []
    for r in requests:
        start = origin.get(session_key(r), 0.0)
        stamp = None if r.timestamp_ms is None else start + (r.timestamp_ms - start) * factor
        out.append(replace(r, delay_ms=scaled(r.delay_ms), tool_wait_ms=scaled(r.tool_wait_ms), timestamp_ms=stamp))
    return out


def markdown_record(record: dict[str, Any]) -> str:
    """One workload of ``benchmarks/pythia_targets.py --json`` as Markdown (for docs/benchmarks.md)."""
    cal = record["calibration"]
    top = cal["ceiling"]
    ceiling = f"{top['jct_mean_s'] / top['ideal_jct_mean_s']:.2f}x ideal" if top else ""
    heavy, moderate = cal["heavy"], cal["moderate"]

    def rate(search: dict[str, Any]) -> str:
        return f"{search['rate_per_s']:.3g}/s" if search["rate_per_s"] else "none"

    if top:
        intro = (f"`sglang` calibration: ceiling {ceiling} (every session at once); heavy point {rate(heavy)} "
                 f"({heavy['reason']}); moderate point {rate(moderate)} ({moderate['reason']}).")
    else:
        intro = f"`sglang` load points given (`--load-points`): heavy {rate(heavy)}, moderate {rate(moderate)}."
    lines = [intro, "", "| target | achieved | goal | result | note |", "|---|---|---|---|---|"]
    for r in record["targets"]:
        achieved = "-" if r["achieved"] is None else f"{r['achieved']:.2f}"
        result = "n/a" if r["met"] is None else ("met" if r["met"] else "**missed**")
        lines.append(f"| {r['target']} | {achieved} | {r['goal']} | {result} | {r['note']} |")
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for label, at in record["at"].items():
        for row in at["rows"]:
            rows.setdefault(row["policy"], {})[label] = row
    labels = [label for label in ("heavy", "moderate") if label in record["at"]]
    if labels:
        head = " | ".join(f"{label} {record['at'][label]['rate']:.3g}/s: mean s | x ideal | p95 s" for label in labels)
        lines += ["", f"| policy | {head} |", "|---|" + "---|" * (3 * len(labels))]
        for policy, by_label in rows.items():
            cells = []
            for label in labels:
                m = by_label.get(label)
                cells += (["-"] * 3 if m is None else
                          [f"{m['jct_mean_s']:.1f}", f"{m['jct_over_ideal']:.2f}", f"{m['jct_p95_s']:.1f}"])
            lines.append(f"| {policy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
