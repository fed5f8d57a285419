from __future__ import annotations

import pytest

from pythia_sdk.protocol import Problem
from pythia_server.gateway.metrics import AgentLabelCap, GatewayMetrics, LabelCap, problem_reason


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


def test_agent_labels_are_capped_per_workflow_and_agent_pair() -> None:
    cap = AgentLabelCap(2)
    assert [cap("w1", "a"), cap("w1", "b"), cap("w2", "a"), cap("w1", "a"), cap("w1", None)] == \
        ["a", "b", "other", "a", "(untagged)"]


def test_random_agent_names_do_not_grow_the_per_agent_series() -> None:
    metrics = GatewayMetrics(max_workflows=2, max_agents=4)
    for i in range(200):
        metrics.observe_call(route="chat", workflow=f"wf{i % 3}", status="ok", prompt_tokens=5, cached_tokens=2,
                             output_tokens=1, ttft_ms=1.0, e2e_ms=2.0, queue_ms=0.1, agent=f"agent-{i}")
    metrics.set_workflow_standing("wf0", "proactive", 0.8, None)
    metrics.set_workflow_standing("wf2", "proactive")  # over the workflow cap: no gauge for "other"
    text = metrics.render().decode()
    pairs = {(line.split('workflow="')[1].split('"')[0], line.split('agent="')[1].split('"')[0])
             for line in text.splitlines() if line.startswith("pythia_agent_requests_total{")}
    assert len(pairs) == 4 + 3  # 4 named pairs, then "other" under each of the 3 workflow labels
    assert ("wf0", "other") in pairs and ("other", "other") in pairs
    assert sum(1 for line in text.splitlines() if line.startswith("pythia_agent_e2e_seconds_count{")) == 7
    assert 'pythia_workflow_proactive{workflow="wf0"} 1.0' in text
    assert 'pythia_workflow_next_agent_top1{workflow="wf0"} 0.8' in text
    assert 'workflow="other"' not in "".join(l for l in text.splitlines() if l.startswith("pythia_workflow_"))
