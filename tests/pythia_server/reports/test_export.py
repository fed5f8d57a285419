"""``pythia-server report --html FILE`` from a real SQLite store file."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pythia_server.cli import CliError
from pythia_server.reports import command
from pythia_server.reports.svg import esc
from pythia_server.store.sqlite import Store
from tests.pythia_server.reports import report_samples as rs


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", *argv])
    return args.func(args)


def test_report_html_writes_the_offline_file_and_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "pythia.db")
    store = Store(db)
    for call in rs.sample_calls():
        store.record_call(call)
    store.close()
    out = tmp_path / "out" / "report.html"
    assert _run(["--db", db, "--html", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.rstrip().endswith(f"HTML report: {out}")
    page = out.read_text()
    assert 'data-workflow="deep_research"' in page and esc(rs.HOSTILE) in page
    assert "planner researcher[x2-4] (writer reviewer)" in page
    assert _run(["--db", db, "--workflow", "deep_research", "--json", "--html", str(out)]) == 0
    assert "HTML report:" in capsys.readouterr().err  # stdout stays pure JSON
    assert esc(rs.HOSTILE) not in out.read_text()


def test_unwritable_target_is_a_one_line_error(tmp_path: Path) -> None:
    db = str(tmp_path / "pythia.db")
    Store(db).close()
    (tmp_path / "file").write_text("")
    with pytest.raises(CliError, match="cannot write"):
        _run(["--db", db, "--html", str(tmp_path / "file" / "report.html")])


def test_report_html_from_a_url_uses_the_full_report_and_falls_back_to_the_api(tmp_path: Path) -> None:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    from pythia_server.reports.data import build_report
    from pythia_server.reports.enrich import enrich_report
    from pythia_server.reports.pages import make_pages

    calls = rs.deep_research_calls(sessions=5)

    async def full() -> dict:
        return enrich_report(build_report(calls), calls, cache_actions=rs.CACHE_ACTIONS)

    async def api(request: object) -> JSONResponse:
        return JSONResponse(build_report(calls))

    out = tmp_path / "r.html"
    with rs.serve(Starlette(routes=[Route("/pythia/api/report", api),
                                    Mount("/pythia", app=make_pages(full))])) as url:
        assert _run(["--url", url, "--html", str(out)]) == 0
    assert "52,000" in out.read_text()  # cache actions came through /pythia/report.json
    with rs.serve(Starlette(routes=[Route("/pythia/api/report", api)])) as url:
        assert _run(["--url", url, "--html", str(out)]) == 0
    page = out.read_text()
    assert 'data-workflow="deep_research"' in page and "no cache actions yet" in page
