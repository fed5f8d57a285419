"""pages.py over real HTTP on loopback: index, per-workflow pages, downloads, errors."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from pythia_server.reports.data import build_report
from pythia_server.reports.enrich import enrich_report, session_timeline
from pythia_server.reports.pages import make_pages
from pythia_server.reports.svg import esc
from tests.pythia_server.reports import report_samples as rs

CALLS = rs.sample_calls()


async def _report() -> dict[str, Any]:
    return enrich_report(build_report(CALLS), CALLS, generated_at_s=rs.T0)


async def _timeline(workflow: str, session: str) -> dict[str, Any] | None:
    rows = [c for c in CALLS if (c.workflow or "(untagged)") == workflow and c.session == session]
    return session_timeline(rows) if rows else None


async def _broken() -> dict[str, Any]:
    raise RuntimeError("store <locked>")


async def _api(request: Any) -> JSONResponse:
    return JSONResponse({"api": True})


def _get(url: str) -> tuple[int, dict[str, str], str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    app = Starlette(routes=[
        Route("/pythia/api/report", _api),  # the gateway's API routes come before the mount
        Mount("/pythia", app=make_pages(_report, get_timeline=_timeline, refresh_s=3)),
        Mount("/broken", app=make_pages(_broken)),
    ])
    with rs.serve(app) as url:
        yield url


def test_index_links_every_workflow_page(base: str) -> None:
    status, headers, page = _get(base + "/pythia/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert headers["cache-control"] == "no-store"
    assert 'data-refresh-s="3"' in page
    for name in ("deep_research", rs.HOSTILE):
        href = "/pythia/workflows/" + urllib.parse.quote(name, safe="")
        assert f'href="{esc(href)}"' in page
    assert rs.HOSTILE not in page


def test_a_workflow_page_shows_that_workflow_only(base: str) -> None:
    status, _, page = _get(base + "/pythia/workflows/deep_research")
    assert status == 200
    assert page.count('<section class="workflow"') == 1 and 'data-workflow="deep_research"' in page
    status, _, page = _get(base + "/pythia/workflows/" + urllib.parse.quote(rs.HOSTILE, safe=""))
    assert status == 200 and f'data-workflow="{esc(rs.HOSTILE)}"' in page


def test_unknown_workflow_is_404_with_a_page(base: str) -> None:
    status, _, page = _get(base + "/pythia/workflows/nope")
    assert status == 404 and "no workflow type named" in page


def test_downloads_and_json(base: str) -> None:
    status, headers, page = _get(base + "/pythia/report.html")
    assert status == 200 and "attachment" in headers["content-disposition"]
    assert "connect-src 'none'" in page  # the download is the offline file, no refresh
    status, _, body = _get(base + "/pythia/report.json")
    assert status == 200 and [w["workflow"] for w in json.loads(body)["workflows"]] == [
        rs.HOSTILE, "deep_research"]
    assert json.loads(_get(base + "/pythia/api/report")[2]) == {"api": True}  # not shadowed


def test_a_failing_source_gives_503_with_the_reason_escaped(base: str) -> None:
    status, _, page = _get(base + "/broken/")
    assert status == 503 and "store &lt;locked&gt;" in page


def test_mounted_on_the_real_gateway_beside_its_json_api(tmp_path: Any) -> None:
    from pythia_server.config import GatewayConfig
    from pythia_server.gateway.app import build_app
    from pythia_server.reports.pages import make_store_pages

    app = build_app(GatewayConfig(db_path=str(tmp_path / "pythia.db")), [])
    gateway = app.state.gateway
    if not any(isinstance(r, Mount) and r.path == "/pythia" for r in app.routes):  # the lead's line:
        app.router.routes.append(Mount("/pythia", app=make_store_pages(gateway.read, lambda: gateway.store)))
    with rs.serve(app) as url:
        for call in rs.deep_research_calls(sessions=4):
            gateway.store.record_call(call)
        api = json.loads(_get(url + "/pythia/api/report")[2])
        assert [w["sessions"] for w in api["workflows"]] == [4]
        status, _, page = _get(url + "/pythia")  # redirected to /pythia/
        assert status == 200 and 'data-workflow="deep_research"' in page
        assert '<div class="v">4</div>' in page
        status, _, page = _get(url + "/pythia/workflows/deep_research?session=deep_research-s002")
        assert status == 200 and "chosen: deep_research-s002" in page
        gateway.store.record_call(replace(rs.deep_research_calls(sessions=1)[0], call_id="u1",
                                          workflow=None, session="lonely"))
        status, _, page = _get(url + "/pythia/workflows/(untagged)?session=lonely")
        assert status == 200 and "chosen: lonely" in page


def test_any_session_timeline_by_id_on_the_workflow_page(base: str) -> None:
    wanted = "deep_research-s004"
    status, _, page = _get(base + "/pythia/workflows/deep_research?session=" + wanted)
    assert status == 200 and '<form method="get" class="session-form">' in page
    assert f"chosen: {wanted}" in page.split('class="timeline-pick"')[1].split("</option>")[0]
    assert "form-action 'self'" in page
    status, _, page = _get(base + "/pythia/workflows/deep_research?session=" + urllib.parse.quote("<nope>"))
    assert status == 200 and "no session &#x27;&lt;nope&gt;&#x27; in deep_research" in page
