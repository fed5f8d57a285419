from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pythia_server.reports.command import load_report
from pythia_server.reports.terminal import format_table, render_report
from pythia_server.store.sqlite import Store
from tests.pythia_server.reports import report_samples as rs
from tests.pythia_server.reports.test_data import rec


def test_table_columns_are_aligned() -> None:
    text = format_table(["name", "n"], [["a", "1"], ["longer name", "12345"]])
    lines = text.splitlines()
    assert lines[0] == "name             n"
    assert lines[1] == "-----------  -----"
    assert lines[3] == "longer name  12345"
    assert len({len(line) for line in lines}) == 1


def test_render_report_lists_workflows_and_agents(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "r.db"), clock=lambda: 0.0)
    store.record_call(rec("1", agent="planner", cached_tokens=50))
    store.record_call(rec("2", agent="writer", session="s2", e2e_ms=1234.5))
    store.record_call(replace(rec("3"), workflow=None, session=None, agent=None))
    store.close()
    report = load_report(str(tmp_path / "r.db"))
    text = render_report(report)
    assert text.splitlines()[0] == "Workflows"
    row = next(line for line in text.splitlines() if line.startswith("wf "))
    assert row.split() == ["wf", "2", "2", "0", "0.1", "0.1", "200", "20", "25.0%"]
    assert "Agents of wf" in text and "Agents of (untagged)" in text
    assert any(line.startswith("writer") and "1234.5" in line for line in text.splitlines())
    # The profiler's view was rebuilt from the file (its sessions are long idle): one line per type.
    profiler_line = next(line for line in text.splitlines() if line.startswith("Profiler: "))
    assert profiler_line.startswith("Profiler: shadow (2 of 8 sessions judged)") and "2 sessions learned" in text
    assert render_report({"workflows": []}) == "No calls recorded yet."


def test_degraded_replicas_get_one_line_each() -> None:
    text = render_report({"workflows": [], "replicas": rs.REPLICAS})
    lines = text.splitlines()
    assert lines[0] == "No calls recorded yet."
    start = next(i for i, line in enumerate(lines) if line.startswith("Replicas"))
    assert len(lines) == start + 1 + len(rs.REPLICAS)
    r0, r1 = lines[start + 1], lines[start + 2]
    assert r0.startswith("r0 (SGLang 0.4.6): missing priority_scheduling (this SGLang has no priority")
    assert r0.endswith("unused by the policy: kv_events")
    assert r1 == "r1 (SGLang ?): no /server_info, features unknown"


def test_replicas_section_only_when_something_is_degraded() -> None:
    healthy = [dict(r, degraded=False) for r in rs.REPLICAS]
    assert "Replicas" not in render_report({"workflows": [], "replicas": healthy})
    assert render_report({"workflows": [], "replicas": []}) == "No calls recorded yet."
