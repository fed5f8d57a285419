"""html.py: every section rendered, every client string escaped, nothing fetched."""

from __future__ import annotations

import re

import pytest

from pythia_server.reports.data import build_report
from pythia_server.reports.enrich import enrich_report
from pythia_server.reports.html import render_html
from pythia_server.reports.svg import esc
from tests.pythia_server.reports import report_samples as rs

SECTIONS = ("graph", "predictions", "jct", "agents", "timeline", "cache", "autoscaler")


@pytest.fixture(scope="module")
def report() -> dict:
    calls = rs.sample_calls()
    return enrich_report(build_report(calls), calls, cache_actions=rs.CACHE_ACTIONS,
                         autoscaler=rs.AUTOSCALER, generated_at_s=rs.T0 + 500)


def test_every_workflow_has_every_section(report: dict) -> None:
    page = render_html(report)
    for i, wf in enumerate(report["workflows"]):
        section = page.split(f'<section class="workflow" id="wf-{i}"')[1].split("</section>")[0]
        for name in SECTIONS:
            assert f'data-section="{name}"' in section
    assert page.count("<svg") >= 3 * len(report["workflows"])
    assert 'data-section="overview"' in page


def test_client_strings_are_escaped(report: dict) -> None:
    page = render_html(report)
    for raw in (rs.HOSTILE, rs.HOSTILE_AGENT, "<b>s0</b>"):
        assert raw not in page
    assert esc(rs.HOSTILE) in page and esc(rs.HOSTILE_AGENT) in page
    assert page.count("<script>") == 1  # ours only


def test_the_file_loads_nothing_from_anywhere(report: dict) -> None:
    page = render_html(report)
    assert "connect-src 'none'" in page and "default-src 'none'" in page
    assert not re.search(r"<(link|img|iframe|object|embed)\b", page)
    assert not re.search(r"\b(src|href)=\"(https?:)?//", page)
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", page))
    assert urls <= {"http://www.w3.org/2000/svg"}


def test_absent_data_is_said_not_invented(report: dict) -> None:
    bare = enrich_report(build_report(rs.deep_research_calls()), rs.deep_research_calls())
    page = render_html(bare)
    assert "no cache actions yet" in page
    assert "autoscaler off" in page
    assert "profiler not attached" in page
    assert "observed from 12 sessions" in page


def test_numbers_in_the_page_are_the_reports(report: dict) -> None:
    wf = next(w for w in report["workflows"] if w["workflow"] == "deep_research")
    page = render_html(report, only="deep_research")
    assert f'{wf["jct_mean_s"]:,.2f} s' in page
    assert f'<div class="v">{wf["sessions"]}</div>' in page
    assert page.count('<section class="workflow"') == 1
    assert 'data-section="overview"' not in page
    assert "52,000" in page  # warmed tokens from the cache actions
    assert "fan-out of 4 researchers predicted" in page


def test_empty_and_unknown() -> None:
    assert "no calls recorded yet" in render_html({"workflows": []})
    page = render_html({"workflows": [{"workflow": "a", "agents": []}]}, only="<zz>")
    assert "no workflow type named" in page and "<zz>" not in page


def test_live_pages_refresh_and_may_fetch_themselves(report: dict) -> None:
    page = render_html(report, refresh_s=5)
    assert 'data-refresh-s="5"' in page and "connect-src 'self'" in page


def test_replicas_section_names_missing_features(report: dict) -> None:
    assert 'data-section="replicas"' not in render_html(report)  # offline: no replicas
    page = render_html(dict(report, replicas=rs.REPLICAS))
    section = page.split('data-section="replicas"')[1].split("</table>")[0]
    assert section.count("<tr>") == 1 + len(rs.REPLICAS)
    assert '<span class="over">priority_scheduling</span> (needed by the policy)' in section
    assert "kv_events</span> (unused by the policy)" in section
    assert "no /server_info" in section
    assert rs.HOSTILE not in page and esc(rs.HOSTILE) in section
    assert "1 of 3 replicas lack a feature" in page
