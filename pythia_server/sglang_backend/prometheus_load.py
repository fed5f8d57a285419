"""A replica's load from SGLang's Prometheus ``/metrics`` text, for servers without ``/v1/loads``.

``/v1/loads`` (SGLang 0.5) is the preferred source; older SGLang versions (and servers run
without it) still export the same gauges under ``--enable-metrics``. Each gauge is summed
over its label sets (one per TP/DP rank), like the gateway sums ``/v1/loads`` ranks.
"""

from __future__ import annotations

import math

__all__ = ["LOAD_GAUGES", "parse_load_metrics"]

#: Prometheus gauge -> the ``/v1/loads`` field it stands in for.
LOAD_GAUGES: dict[str, str] = {
    "sglang:num_queue_reqs": "num_waiting_reqs",
    "sglang:num_running_reqs": "num_running_reqs",
    "sglang:max_total_num_tokens": "max_total_num_tokens",
    "sglang:num_used_tokens": "num_used_tokens",
}


def parse_load_metrics(text: str) -> dict[str, int]:
    """The load fields found in ``text`` (Prometheus exposition format); absent ones are left out.

    Malformed lines are skipped: a half-broken exporter loses a field, never the probe.
    """
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_end = min((i for i in (line.find("{"), line.find(" ")) if i >= 0), default=-1)
        if name_end <= 0:
            continue
        field = LOAD_GAUGES.get(line[:name_end])
        if field is None:
            continue
        rest = line[line.rfind("}") + 1 :] if "{" in line[:name_end + 1] else line[name_end:]
        parts = rest.split()
        if not parts:
            continue
        try:
            value = float(parts[0])
        except ValueError:
            continue
        if math.isfinite(value) and value >= 0:
            totals[field] = totals.get(field, 0.0) + value
    return {field: int(round(value)) for field, value in totals.items()}
