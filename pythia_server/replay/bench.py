"""Benchmark runs: every named policy on one workload, at one load or a sweep of loads.

``pythia-server bench`` (``bench_command.py``) is a thin shell over these functions:
:func:`prepare_workload` reads and sizes the workload and times its sessions,
:func:`run_policy` replays it under a fresh bundle, :func:`sweep` repeats that over
arrival rates, :func:`format_table` and :func:`sweep_svg` render the figures.

KVFlow needs each workflow's agent step graph, which it takes from the agent framework;
here it comes from the workload's own ``wait_for`` edges (:func:`workflow_graphs`), the
same information the framework would hold.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pythia_server.engine.step_time import StepTimeModel
from pythia_server.engine.types import EngineConfig
from pythia_server.policy import make_policy
from pythia_server.policy.baselines import WorkflowGraph
from pythia_server.replay.arrivals import PoissonArrivals, apply_arrivals
from pythia_server.replay.metrics import RunMetrics, ideal_jct_s, summarize
from pythia_server.replay.runner import ReplayConfig, ReplayRunner
from pythia_server.replay.transforms import first_sessions, replicate_sessions
from pythia_server.replay.workload import WorkloadRequest, load_workload, session_keys

__all__ = [
    "BenchSettings",
    "format_table",
    "lines_svg",
    "prepare_workload",
    "run_policies",
    "run_policy",
    "sweep",
    "sweep_svg",
    "workflow_graphs",
]


@dataclass(frozen=True, slots=True)
class BenchSettings:
    replicas: int = 1
    concurrency: int | None = None
    block_size: int = 64  # the gateway's block size (CallInfo.block_hashes)
    seed: int = 0
    engine: EngineConfig | None = None  # None: one H100 SXM 80GB, Llama-3.1-8B (EngineConfig.from_gpu)
    reprioritize_every_s: float | None = 1.0  # None: priority asked once, at submission
    cold_start_s: float = 30.0  # for bundles with a scaler


def prepare_workload(
    path: str,
    *,
    trace_block_size: int | None = None,
    sessions: int | None = None,
    rate: float | None = None,
    seed: int = 0,
) -> list[WorkloadRequest]:
    """Load, keep (or replicate up to) ``sessions`` sessions, and re-time them as Poisson at ``rate``."""
    requests = load_workload(path, block_size=trace_block_size)
    if not requests:
        raise ValueError(f"{path}: no requests")
    if sessions is not None:
        if sessions <= 0:
            raise ValueError("--sessions must be positive")
        have = len(session_keys(requests))
        if sessions > have:
            requests = replicate_sessions(requests, -(-sessions // have))
        requests = first_sessions(requests, sessions)
    if rate is not None:
        if rate <= 0:
            raise ValueError("--rate must be positive")
        requests = apply_arrivals(requests, PoissonArrivals(rate, seed))
    return requests


def workflow_graphs(requests: Sequence[WorkloadRequest]) -> list[WorkflowGraph]:
    """Agent step graphs per workflow type from the workload's dependency edges."""
    agent_of = {r.request_id: (r.workflow_type, r.agent) for r in requests}
    edges: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for r in requests:
        if r.workflow_type is None or r.agent is None:
            continue
        for dependency in r.wait_for:
            workflow, agent = agent_of.get(dependency, (None, None))
            if workflow == r.workflow_type and agent is not None:
                edges[workflow][agent].add(r.agent)
    return [
        WorkflowGraph(workflow, {a: tuple(sorted(nxt)) for a, nxt in succ.items()})
        for workflow, succ in sorted(edges.items())
    ]


def run_policy(
    name: str,
    requests: Sequence[WorkloadRequest],
    settings: BenchSettings,
    step_time: StepTimeModel,
    ideal: dict[str, float],
    graphs: Sequence[WorkflowGraph] = (),
) -> RunMetrics:
    """One replay of ``requests`` under a fresh ``make_policy(name)`` bundle."""
    bundle = make_policy(name, seed=settings.seed, block_size=settings.block_size, graphs=graphs)
    config = ReplayConfig(
        replicas=settings.replicas,
        engine=settings.engine or EngineConfig.from_gpu(),
        block_size=settings.block_size,
        concurrency=settings.concurrency,
        reprioritize_every_s=settings.reprioritize_every_s,
        cold_start_s=settings.cold_start_s,
    )
    result = ReplayRunner(requests, bundle, config, step_time).run()
    return summarize(result, ideal)


def run_policies(
    names: Sequence[str],
    requests: Sequence[WorkloadRequest],
    settings: BenchSettings,
    step_time: StepTimeModel,
    progress: Callable[[str], None] | None = None,
) -> list[RunMetrics]:
    engine = settings.engine or EngineConfig.from_gpu()
    ideal = ideal_jct_s(requests, step_time, engine)
    graphs = workflow_graphs(requests)
    out = []
    for name in names:
        if progress is not None:
            progress(name)
        out.append(run_policy(name, requests, settings, step_time, ideal, graphs))
    return out


def sweep(
    path: str,
    names: Sequence[str],
    rates: Sequence[float],
    settings: BenchSettings,
    step_time: StepTimeModel,
    *,
    trace_block_size: int | None = None,
    sessions: int | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict[float, list[RunMetrics]]:
    """Every policy at every Poisson rate (sessions/s); ``progress(done, total, label)``."""
    total = len(rates) * len(names)
    done = 0
    out: dict[float, list[RunMetrics]] = {}
    for rate in rates:
        requests = prepare_workload(path, trace_block_size=trace_block_size, sessions=sessions, rate=rate,
                                    seed=settings.seed)

        def tick(name: str, rate: float = rate) -> None:
            nonlocal done
            if progress is not None:
                progress(done, total, f"{name} @ {rate:g}/s")
            done += 1

        out[rate] = run_policies(names, requests, settings, step_time, tick)
    if progress is not None:
        progress(total, total, "done")
    return out


# ------------------------------------------------------------------ rendering
_COLUMNS = (
    ("policy", "policy", "{}"),
    ("sessions", "sessions", "{}"),
    ("JCT mean s", "jct_mean_s", "{:.2f}"),
    ("JCT p95 s", "jct_p95_s", "{:.2f}"),
    ("ideal s", "ideal_jct_mean_s", "{:.2f}"),
    ("x ideal", "jct_over_ideal", "{:.2f}"),
    ("TTFT s", "ttft_mean_s", "{:.3f}"),
    ("e2e s", "e2e_mean_s", "{:.2f}"),
    ("tok/s", "throughput_tok_s", "{:.0f}"),
    ("hit rate", "cache_hit_rate", "{:.3f}"),
    ("preempt", "preemptions", "{}"),
    ("replica-s", "replica_s", "{:.0f}"),
)


def format_table(rows: Sequence[RunMetrics], rate: float | None = None) -> str:
    """A plain-text table, one line per policy (with a rate column in a sweep)."""
    columns = list(_COLUMNS)
    cells = [[fmt.format(getattr(m, attr)) for _, attr, fmt in columns] for m in rows]
    header = [title for title, _, _ in columns]
    if rate is not None:
        header.insert(1, "rate/s")
        for line in cells:
            line.insert(1, f"{rate:g}")
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for line in cells:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))))
    return "\n".join(lines)


_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def sweep_svg(results: dict[float, list[RunMetrics]], title: str = "JCT vs load") -> str:
    """Mean JCT against arrival rate, one line per policy, the ideal dashed (self-contained SVG)."""
    rates = sorted(results)
    policies = [m.policy for m in results[rates[0]]] if rates else []
    series = {p: [(r, next(m.jct_mean_s for m in results[r] if m.policy == p)) for r in rates] for p in policies}
    series["ideal"] = [(r, results[r][0].ideal_jct_mean_s) for r in rates if results[r]]
    return lines_svg(series, title, "mean JCT (s)", dashed=("ideal",))


def lines_svg(
    series: dict[str, list[tuple[float, float]]],
    title: str,
    y_label: str,
    x_label: str = "arrival rate (sessions/s)",
    dashed: Sequence[str] = (),
) -> str:
    """One line per series (x = rate) from a zero y axis; ``dashed`` series drawn in black, dashed."""
    width, height, left, right, top, bottom = 640, 380, 64, 150, 36, 48
    xs = sorted({x for pts in series.values() for x, _ in pts})
    ys = [y for pts in series.values() for _, y in pts]
    x_lo, x_hi = (xs[0], xs[-1]) if xs else (0.0, 1.0)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo * 0.9, x_hi * 1.1 or 1.0
    y_hi = max(ys, default=1.0) * 1.08 or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * plot_w

    def py(y: float) -> float:
        return top + plot_h - y / y_hi * plot_h

    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
              f'height="{height}" font-family="sans-serif" font-size="12">'),
             f'<title>{html.escape(title)}</title><rect width="100%" height="100%" fill="white"/>',
             f'<text x="{left}" y="20" font-size="14">{html.escape(title)}</text>',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="black"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="black"/>']
    for i in range(6):
        y = y_hi * i / 5
        parts.append(f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:.3g}</text>'
                     f'<line x1="{left}" y1="{py(y):.1f}" x2="{left + plot_w}" y2="{py(y):.1f}" stroke="#eee"/>')
    ticks = xs if len(xs) <= 8 else [x_lo + (x_hi - x_lo) * i / 6 for i in range(7)]
    for r in ticks:
        parts.append(f'<text x="{px(r):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{r:.3g}</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 10}" text-anchor="middle">{html.escape(x_label)}'
                 f'</text><text x="14" y="{top + plot_h / 2}" transform="rotate(-90 14 '
                 f'{top + plot_h / 2})" text-anchor="middle">{html.escape(y_label)}</text>')
    for i, (name, pts) in enumerate(series.items()):
        black = name in dashed
        colour = "#000" if black else _PALETTE[i % len(_PALETTE)]
        dash = ' stroke-dasharray="5,4"' if black else ""
        pts = sorted(pts)
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{coords}">'
                     f'<title>{html.escape(name)}</title></polyline>')
        parts.extend(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>' for x, y in pts)
        ly = top + 14 + 18 * i
        parts.append(f'<line x1="{left + plot_w + 12}" y1="{ly - 4}" x2="{left + plot_w + 32}" y2="{ly - 4}" '
                     f'stroke="{colour}" stroke-width="2"{dash}/><text x="{left + plot_w + 38}" y="{ly}">'
                     f'{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)
