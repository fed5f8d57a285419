"""Summary statistics of a workload, one row per workflow type (``workload stats``).

- ``reuse``: prefix reuse ratio = blocks whose whole prefix (ids 0..i) already occurred in
  an earlier call of the file (file order, any session) / all blocks: the hit rate an
  infinite cache would see in that order.
- ``fanout``: per session, the most calls that one call releases (the largest number of
  calls listing the same request in ``wait_for``); shown as mean and max over sessions.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from pythia_server.replay.workload import WorkloadRequest, session_key

__all__ = ["WorkflowStats", "format_table", "workload_stats"]


@dataclass(frozen=True, slots=True)
class WorkflowStats:
    workflow_type: str
    sessions: int
    calls: int
    input_mean: float
    input_p50: float
    input_p95: float
    output_mean: float
    output_p50: float
    output_p95: float
    reuse: float
    fanout_mean: float
    fanout_max: int

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)])


def workload_stats(requests: Sequence[WorkloadRequest]) -> list[WorkflowStats]:
    """Per workflow type (``-`` for untagged calls) and ``all``, in first-seen order."""
    seen_prefixes: set[int] = set()
    reused: dict[str, int] = defaultdict(int)
    blocks: dict[str, int] = defaultdict(int)
    groups: dict[str, list[WorkloadRequest]] = defaultdict(list)
    for r in requests:
        kind = r.workflow_type or "-"
        groups[kind].append(r)
        prefix = 0
        for hash_id in r.hash_ids:
            prefix = hash((prefix, hash_id))
            if prefix in seen_prefixes:
                reused[kind] += 1
            else:
                seen_prefixes.add(prefix)
        blocks[kind] += len(r.hash_ids)
    rows = [
        _row(kind, calls, reused[kind], blocks[kind]) for kind, calls in groups.items()
    ]
    if len(groups) > 1:
        rows.append(
            _row("all", list(requests), sum(reused.values()), sum(blocks.values()))
        )
    return rows


def _row(
    kind: str, calls: list[WorkloadRequest], reused: int, blocks: int
) -> WorkflowStats:
    inputs = [r.input_length for r in calls]
    outputs = [r.output_length for r in calls]
    released: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in calls:
        for dependency in r.wait_for:
            released[session_key(r)][dependency] += 1
    sessions = {session_key(r) for r in calls}
    fanouts = [max(released[s].values(), default=0) for s in sessions]
    return WorkflowStats(
        workflow_type=kind,
        sessions=len(sessions),
        calls=len(calls),
        input_mean=sum(inputs) / len(inputs),
        input_p50=_percentile(inputs, 50),
        input_p95=_percentile(inputs, 95),
        output_mean=sum(outputs) / len(outputs),
        output_p50=_percentile(outputs, 50),
        output_p95=_percentile(outputs, 95),
        reuse=reused / blocks if blocks else 0.0,
        fanout_mean=sum(fanouts) / len(fanouts),
        fanout_max=max(fanouts, default=0),
    )


_COLUMNS = (
    ("workflow_type", "workflow", "{}"),
    ("sessions", "sessions", "{}"),
    ("calls", "calls", "{}"),
    ("input_mean", "in mean", "{:.0f}"),
    ("input_p50", "in p50", "{:.0f}"),
    ("input_p95", "in p95", "{:.0f}"),
    ("output_mean", "out mean", "{:.0f}"),
    ("output_p50", "out p50", "{:.0f}"),
    ("output_p95", "out p95", "{:.0f}"),
    ("reuse", "reuse", "{:.3f}"),
    ("fanout_mean", "fanout mean", "{:.2f}"),
    ("fanout_max", "fanout max", "{}"),
)


def format_table(rows: Sequence[WorkflowStats]) -> str:
    cells = [[title for _, title, _ in _COLUMNS]]
    for row in rows:
        values = row.as_dict()
        cells.append([fmt.format(values[name]) for name, _, fmt in _COLUMNS])
    widths = [max(len(line[i]) for line in cells) for i in range(len(_COLUMNS))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths))
        )
        for line in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
