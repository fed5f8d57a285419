"""Live report pages under ``/pythia/``: an index and one page per workflow type.

The pages are the HTML report (:func:`pythia_server.reports.html.render_html`) rendered
on each request from ``get_report()`` (the same dict as the JSON API), with a small
script that re-fetches the page every ``refresh_s`` seconds and swaps its content in
place. The gateway mounts them after its ``/pythia/api/...`` routes::

    Mount("/pythia", app=make_store_pages(gateway.read, lambda: gateway.store)),

Routes (relative to the mount): ``/`` index, ``/workflows/{name}`` one workflow type
(``?session=ID`` draws that session's timeline first, when ``get_timeline`` is given),
``/report.html`` the self-contained file as a download, ``/report.json`` the dict.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, Router

from pythia_server.reports.html import render_html
from pythia_server.reports.svg import esc

__all__ = ["ReportSource", "TimelineSource", "make_pages", "make_store_pages"]

log = logging.getLogger(__name__)

ReportSource = Callable[[], Awaitable[dict[str, Any]]]
#: (workflow, session) -> that session's timeline (enrich.session_timeline) or None.
TimelineSource = Callable[[str, str], Awaitable[dict[str, Any] | None]]

#: Longest session id the page will look up (the wire protocol bounds them tighter).
_MAX_SESSION_CHARS = 256

_NO_STORE = {"cache-control": "no-store"}


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _workflow_href(root: str) -> Callable[[int, dict[str, Any]], str]:
    def link(_index: int, wf: dict[str, Any]) -> str:
        return f"{root}/workflows/{quote(str(wf.get('workflow') or '(untagged)'), safe='')}"
    return link


def make_pages(get_report: ReportSource, *, get_timeline: TimelineSource | None = None,
               refresh_s: float = 10.0, title: str = "Pythia") -> Router:
    """A Starlette router serving the live pages from ``get_report`` (awaited per request)."""

    async def load() -> dict[str, Any] | Response:
        try:
            return await get_report()
        except Exception as exc:  # the page says why instead of a bare 500
            log.exception("report unavailable")
            return HTMLResponse(f"<!DOCTYPE html><title>{esc(title)}</title>"
                                f"<p>report unavailable: {esc(type(exc).__name__)}: {esc(exc)}</p>",
                                status_code=503, headers=_NO_STORE)

    async def index(request: Request) -> Response:
        report = await load()
        if isinstance(report, Response):
            return report
        root = _root(request)
        page = render_html(report, title=f"{title}: workflows", refresh_s=refresh_s,
                           link=_workflow_href(root), nav_links=[(f"{root}/", "all workflows")])
        return HTMLResponse(page, headers=_NO_STORE)

    async def workflow_page(request: Request) -> Response:
        name = request.path_params["workflow"]
        report = await load()
        if isinstance(report, Response):
            return report
        root = _root(request)
        known = any((wf.get("workflow") or "(untagged)") == name for wf in report.get("workflows", []))
        session = request.query_params.get("session", "").strip()
        if known and session and get_timeline is not None:
            report = await _with_session(report, name, session)
        page = render_html(report, title=f"{title}: {name}", only=name, refresh_s=refresh_s,
                           link=_workflow_href(root), nav_links=[(f"{root}/", "all workflows")],
                           session_form=get_timeline is not None)
        return HTMLResponse(page, status_code=200 if known else 404, headers=_NO_STORE)

    async def _with_session(report: dict[str, Any], name: str, session: str) -> dict[str, Any]:
        """The report with ``session``'s timeline first in ``name``'s list (or a note why not)."""
        assert get_timeline is not None
        timeline = None
        if len(session) <= _MAX_SESSION_CHARS:
            timeline = await get_timeline(name, session)
        workflows = []
        for wf in report.get("workflows", []):
            if (wf.get("workflow") or "(untagged)") == name:
                wf = dict(wf)
                if timeline is None:
                    wf["timeline_note"] = f"no session {session!r} in {name}"
                else:
                    others = [t for t in wf.get("timelines") or [] if t.get("session") != session]
                    wf["timelines"] = [{**timeline, "label": "chosen"}, *others]
            workflows.append(wf)
        return {**report, "workflows": workflows}

    async def download(request: Request) -> Response:
        report = await load()
        if isinstance(report, Response):
            return report
        headers = {**_NO_STORE, "content-disposition": 'attachment; filename="pythia-report.html"'}
        return HTMLResponse(render_html(report, title=f"{title} report"), headers=headers)

    async def as_json(request: Request) -> Response:
        report = await load()
        if isinstance(report, Response):
            return report
        return JSONResponse(report, headers=_NO_STORE)

    return Router(routes=[
        Route("/", index, methods=["GET"]),
        Route("/workflows/{workflow:path}", workflow_page, methods=["GET"]),
        Route("/report.html", download, methods=["GET"]),
        Route("/report.json", as_json, methods=["GET"]),
    ])


def make_store_pages(read: Callable[..., Awaitable[Any]], get_store: Callable[[], Any], *,
                     profiler: Any = None, history: Any = None,
                     cache_actions: Callable[[], Any] | None = None,
                     autoscaler: Callable[[], Any] | None = None,
                     replicas: Callable[[], Any] | None = None,
                     clock: Callable[[], float] = time.time, refresh_s: float = 10.0) -> Router:
    """The live pages over a store: the gateway's one-line mount.

    ``read(fn)`` runs a store query off the event loop (``Gateway.read``); ``get_store()``
    returns the store once the gateway has started. ``profiler`` / ``history`` /
    ``cache_actions()`` / ``autoscaler()`` are passed to
    :func:`~pythia_server.reports.enrich.build_full_report` when given; ``replicas()``
    becomes the report's ``replicas`` key.
    """
    from pythia_server.reports.enrich import UNTAGGED, build_full_report, session_timeline

    async def full_report() -> dict[str, Any]:
        store = get_store()
        now_s = clock()
        calls, sessions = await read(lambda: (store.calls(), store.sessions()))
        report = build_full_report(calls, sessions, profiler=profiler, history=history,
                                   cache_actions=cache_actions() if cache_actions else None,
                                   autoscaler=autoscaler() if autoscaler else None, now_s=now_s)
        if replicas is not None:
            report["replicas"] = replicas()
        return report

    async def timeline(workflow: str, session: str) -> dict[str, Any] | None:
        store = get_store()
        tag = "" if workflow == UNTAGGED else workflow  # the store's spelling of "untagged"
        calls = await read(lambda: store.calls(workflow=tag, session=session))
        return session_timeline(calls) if calls else None

    return make_pages(full_report, get_timeline=timeline, refresh_s=refresh_s)
