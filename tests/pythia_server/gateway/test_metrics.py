from __future__ import annotations

import pytest

from pythia_sdk.protocol import Problem
from pythia_server.gateway.metrics import GatewayMetrics, LabelCap, problem_reason


def test_workflow_labels_are_capped() -> None:
    cap = LabelCap(2)
    assert [cap(v) for v in ("a", "b", "c", "a", None, "")] == ["a", "b", "other", "a", "(untagged)", "(untagged)"]


@pytest.mark.parametrize(("reason", "label"), [
    ("expected a string, got int", "wrong_type"), ("empty value", "empty"),
    ("longer than 200 characters", "too_long"), ("characters outside the allowed set", "bad_charset"),
    ("unreadable: boom", "unreadable"), ("something new", "other"),
])
def test_problem_reasons_map_to_a_fixed_set(reason: str, label: str) -> None:
    assert problem_reason(Problem("x", reason)) == label


def test_many_workflows_do_not_grow_the_series() -> None:
    metrics = GatewayMetrics(max_workflows=3)
    for i in range(100):
        metrics.observe_call(route="chat", workflow=f"wf{i}", status="ok", prompt_tokens=1, cached_tokens=0,
                             output_tokens=1, ttft_ms=1.0, e2e_ms=2.0, queue_ms=0.1)
    text = metrics.render().decode()
    workflows = {line.split('workflow="')[1].split('"')[0] for line in text.splitlines()
                 if line.startswith("pythia_requests_total{")}
    assert workflows == {"wf0", "wf1", "wf2", "other"}
    assert 'pythia_requests_total{route="chat",status="ok",workflow="other"} 97.0' in text
