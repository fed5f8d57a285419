"""docs/grafana-dashboard.json only queries series the gateway's /metrics exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import generate_latest

from pythia_server.gateway.metrics import GatewayMetrics

DASHBOARD = Path(__file__).resolve().parents[3] / "docs" / "grafana-dashboard.json"


def test_every_series_and_label_in_the_dashboard_exists() -> None:
    metrics = GatewayMetrics(max_workflows=5)
    metrics.observe_call(route="chat", workflow="wf", status="ok", prompt_tokens=10, cached_tokens=4,
                         output_tokens=3, ttft_ms=20.0, e2e_ms=50.0, queue_ms=1.0, agent="planner")
    metrics.set_workflow_standing("wf", "proactive", 0.9, 0.95)
    metrics.profiler_calls.labels("observed").inc()
    metrics.profiler_sessions_ended.labels("span").inc()
    metrics.dropped_tags.labels("too_long").inc()
    metrics.errors.labels("invalid_request_error").inc()
    metrics.retries.inc()
    exposition = generate_latest(metrics.registry).decode()
    exported = {line.split("{")[0].split(" ")[0] for line in exposition.splitlines()
                if line and not line.startswith("#")}
    labels = set(re.findall(r"[{,](\w+)=", exposition))
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 20
    for expr in exprs:
        for name in re.findall(r"\bpythia_\w+", expr):
            assert name in exported, f"{name} is not exported by the gateway"
        for group in re.findall(r"by \(([^)]*)\)", expr):
            for label in (g.strip() for g in group.split(",")):
                assert label in labels, f"label {label} in {expr!r}"
    variable = dashboard["templating"]["list"][1]["definition"]
    assert re.search(r"label_values\((\w+), (\w+)\)", variable).group(1) in exported
