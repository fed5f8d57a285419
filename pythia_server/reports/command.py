"""``pythia-server report``: per-workflow tables from a running gateway or a store file."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["fetch_report", "load_report", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "report", help="per-workflow report (sessions, JCT, tokens, cache hits, per agent)",
        description="Print per-workflow and per-agent tables from a running gateway (--url) "
                    "or a store file (--db).")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--url", help="a running gateway, e.g. http://127.0.0.1:8000")
    source.add_argument("--db", help="a store file written by `pythia-server serve` (default: pythia.db)")
    parser.add_argument("--workflow", help="only this workflow type")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--html", metavar="FILE",
                        help="also write the self-contained HTML report (works offline) to FILE")
    parser.set_defaults(func=run)


def fetch_report(url: str, workflow: str | None = None, timeout_s: float = 30.0) -> dict[str, Any]:
    """GET the gateway's ``/pythia/api/report`` (the full report, built as ``--db`` builds it)."""
    import json
    import urllib.error
    import urllib.parse
    import urllib.request

    from pythia_server.cli import CliError

    query = "?" + urllib.parse.urlencode({"workflow": workflow}) if workflow else ""
    target = url.rstrip("/") + "/pythia/api/report" + query
    try:
        with urllib.request.urlopen(target, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise CliError(f"{target} answered {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise CliError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None
    except ValueError:
        raise CliError(f"{target} did not return JSON") from None


def load_report(db_path: str, workflow: str | None = None) -> dict[str, Any]:
    """The full report read straight from a store file (read-only; safe while a gateway writes).

    The same dict as the gateway's ``/pythia/api/report``; the profiler's view is rebuilt
    by replaying the stored calls (no gateway needs to run).
    """
    from pythia_server.reports.export import load_full_report

    return load_full_report(db_path, workflow)


def run(args: argparse.Namespace) -> int:
    import json

    if args.url:
        report = fetch_report(args.url, args.workflow)
    else:
        report = load_report(args.db or "pythia.db", args.workflow)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        from pythia_server.reports.terminal import render_report

        print(render_report(report))
    if args.html:
        import sys

        from pythia_server.reports.export import fetch_full_report, write_html

        full = fetch_full_report(args.url, args.workflow) if args.url else report
        print(f"HTML report: {write_html(args.html, full)}", file=sys.stderr if args.json else sys.stdout)
    return 0
