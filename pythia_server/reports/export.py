"""``pythia-server report --html FILE``: load the full report and write the offline file.

From ``--db`` the full report is built here from the call and session records, with the
profiler's view rebuilt by replaying the stored calls through a fresh profiler
(``reports/relearn.py``); from ``--url`` it is fetched from the live pages'
``/pythia/report.json`` (which also carries the policies' actions), falling back to the
JSON API's ``/pythia/api/report`` on older gateways.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from pythia_server.reports.html import render_html

__all__ = ["fetch_full_report", "load_full_report", "write_html"]


def load_full_report(db_path: str, workflow: str | None = None, *, relearn: bool = True) -> dict[str, Any]:
    """The full report from a store file, read-only (safe while a gateway writes).

    With ``relearn`` the profiler's view is rebuilt from the stored calls, with the
    profiler settings a gateway started here would use (``PYTHIA_*`` variables).
    """
    import sqlite3

    from pythia_server.cli import CliError
    from pythia_server.config import GatewayConfig
    from pythia_server.reports.enrich import build_full_report
    from pythia_server.reports.profiler_view import AccuracyHistory
    from pythia_server.reports.relearn import replay_profiler
    from pythia_server.store.sqlite import StoreReader

    try:
        config = GatewayConfig.from_env()
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        reader = StoreReader(db_path)
    except FileNotFoundError:
        raise CliError(f"no store at {db_path} (start `pythia-server serve --db {db_path}` first)") from None
    try:
        now_s = time.time()
        calls, sessions = reader.calls(), reader.sessions()
        profiler = history = None
        if relearn:
            history = AccuracyHistory(min_interval_s=config.profiler_history_interval_s)
            profiler = replay_profiler(calls, sessions, config=config.profiler_config(),
                                       session_idle_timeout_s=config.session_idle_timeout_s, now_s=now_s,
                                       history=history, history_interval_s=config.profiler_history_interval_s)
        return build_full_report(calls, sessions, workflow=workflow, profiler=profiler, history=history,
                                 now_s=now_s)
    except sqlite3.DatabaseError as exc:
        raise CliError(f"{db_path} is not a Pythia store: {exc}") from None
    finally:
        reader.close()


def fetch_full_report(url: str, workflow: str | None = None, timeout_s: float = 30.0) -> dict[str, Any]:
    """GET ``/pythia/report.json`` from a running gateway; the API's report if it has none."""
    from pythia_server.cli import CliError
    from pythia_server.reports.command import fetch_report

    target = url.rstrip("/") + "/pythia/report.json"
    try:
        with urllib.request.urlopen(target, timeout=timeout_s) as response:  # the user's own URL
            report = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise CliError(f"{target} answered {exc.code}") from None
        return fetch_report(url, workflow, timeout_s)
    except (urllib.error.URLError, OSError) as exc:
        raise CliError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None
    except ValueError:
        raise CliError(f"{target} did not return JSON") from None
    if workflow is not None:
        report["workflows"] = [w for w in report.get("workflows", []) if w.get("workflow") == workflow]
    return report


def write_html(path: str | os.PathLike[str], report: dict[str, Any]) -> Path:
    """Write the self-contained HTML report atomically (a reader never sees half a file)."""
    from pythia_server.cli import CliError

    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".pythia-report-", suffix=".html", dir=target.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(render_html(report))
        os.replace(tmp, target)
    except OSError as exc:
        raise CliError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target
