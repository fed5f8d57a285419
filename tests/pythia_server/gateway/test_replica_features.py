"""The report names what each replica's SGLang lacks, and whether the running policy needs it."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pythia_server.reports.html import render_html
from pythia_server.reports.terminal import render_report
from tests.pythia_server.gateway.conftest import (
    RunningGateway,
    ServerThread,
    start_gateway,
    wait_for,
)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def autellix_gateway(tmp_path: Path, sims: list[ServerThread]) -> Iterator[RunningGateway]:
    """Autellix sets call priorities; the simulated engines run without priority scheduling."""
    running = start_gateway(tmp_path, [(f"sim-{i}", t.url) for i, t in enumerate(sims)], policy="autellix")
    yield running
    running.server.stop()


def test_report_names_missing_features_the_policy_needs(autellix_gateway: RunningGateway) -> None:
    url = autellix_gateway.url
    assert wait_for(lambda: all(r["features"] for r in get_json(url + "/pythia/api/replicas")["replicas"]))
    report = get_json(url + "/pythia/api/report")
    replicas = {r["replica"]: r for r in report["replicas"]}
    assert sorted(replicas) == ["sim-0", "sim-1"]
    for r in replicas.values():
        assert r["server_info"] and r["sglang_version"] and r["degraded"]
        missing = {m["feature"]: m for m in r["missing"]}
        priority = missing["priority_scheduling"]
        assert priority["used_by_policy"] and "priority" in priority["reason"]
        # Needed ones come first; a feature Autellix does not act through is only noted.
        assert r["missing"][0]["used_by_policy"]
        unused = [m for m in r["missing"] if not m["used_by_policy"]]
        assert unused and all(m["feature"] not in autellix_gateway.gateway.driver.needed_features() for m in unused)
    text = render_report(report)
    assert "Replicas" in text
    line = next(line for line in text.splitlines() if line.startswith("sim-0 (SGLang "))
    assert "missing priority_scheduling (" in line and "unused by the policy" in line
    page = render_html(report)
    assert 'data-section="replicas"' in page and "priority_scheduling" in page
    # The live pages carry the same section.
    with urllib.request.urlopen(url + "/pythia/", timeout=10) as response:
        live = response.read().decode()
    assert 'data-section="replicas"' in live and "priority_scheduling</span> (needed by the policy)" in live


def test_round_robin_needs_no_priority(sim_gateway: RunningGateway) -> None:
    url = sim_gateway.url
    assert wait_for(lambda: all(r["features"] for r in get_json(url + "/pythia/api/replicas")["replicas"]))
    report = get_json(url + "/pythia/api/report")
    for r in report["replicas"]:
        priority = next(m for m in r["missing"] if m["feature"] == "priority_scheduling")
        assert not priority["used_by_policy"]
    assert "Replicas" not in render_report(report)
