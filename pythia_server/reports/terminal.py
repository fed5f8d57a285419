"""The report as aligned terminal tables (the renderer for ``pythia-server report``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["format_table", "render_report"]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value.is_integer() and abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def _percent(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the first column left-aligned, others right."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]

    def line(cells: Sequence[str]) -> str:
        parts = [cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def render_report(report: Mapping[str, Any]) -> str:
    workflows = report.get("workflows") or []
    replicas = _replicas_section(report.get("replicas"))
    if not workflows:
        return "\n\n".join(["No calls recorded yet.", *replicas])
    summary = format_table(
        ["workflow", "sessions", "calls", "errors", "JCT mean s", "JCT p95 s", "prompt tok", "output tok",
         "cache hit"],
        [[w["workflow"], _cell(w["sessions"]), _cell(w["calls"]), _cell(w.get("errors", 0) + w.get("aborted", 0)),
          _cell(w["jct_mean_s"]), _cell(w["jct_p95_s"]), _cell(w["prompt_tokens"]), _cell(w["output_tokens"]),
          _percent(w["cache_hit_rate"])] for w in workflows])
    sections = ["Workflows", summary]
    for w in workflows:
        table = format_table(
            ["agent", "calls", "prompt mean", "prompt p95", "output mean", "output p95", "cache hit",
             "TTFT ms", "e2e ms", "e2e p95 ms"],
            [[a["agent"], _cell(a["calls"]), _cell(a["prompt_tokens_mean"]), _cell(a["prompt_tokens_p95"]),
              _cell(a["output_tokens_mean"]), _cell(a["output_tokens_p95"]), _percent(a["cache_hit_rate"]),
              _cell(a["ttft_ms_mean"]), _cell(a["e2e_ms_mean"]), _cell(a["e2e_ms_p95"])] for a in w["agents"]])
        sections += ["", f"Agents of {w['workflow']}", table]
        learned = _profiler_line(w.get("profiler"))
        if learned:
            sections.append(learned)
    return "\n\n".join(["\n".join(sections), *replicas])


def _replicas_section(replicas: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """One line per replica, shown only when some replica lacks a feature the policy uses."""
    if not replicas or not any(r.get("degraded") for r in replicas):
        return []
    lines = ["Replicas (SGLang features the policy needs but a replica lacks)"]
    for r in replicas:
        head = f"{r.get('replica')} (SGLang {r.get('sglang_version') or '?'}): "
        if not r.get("server_info", True):
            lines.append(head + "no /server_info, features unknown")
            continue
        missing = list(r.get("missing") or [])
        needed = [f"{m['feature']} ({m['reason']})" for m in missing if m.get("used_by_policy")]
        unused = [str(m["feature"]) for m in missing if not m.get("used_by_policy")]
        text = "missing " + "; ".join(needed) if needed else "all needed features present"
        if unused:
            text += f"; also off, unused by the policy: {', '.join(unused)}"
        lines.append(head + text)
    return ["\n".join(lines)]


def _profiler_line(view: Mapping[str, Any] | None) -> str:
    """The profiler's standing in one line (empty when no profiler view is attached)."""
    if not view:
        return ""
    line = (f"Profiler: {view.get('mode')} ({view.get('mode_reason') or '-'}); "
            f"next-agent top-1 {_percent(view.get('next_agent_top1'))}, "
            f"bound coverage {_percent(view.get('bound_coverage'))}, {view.get('sessions_seen') or 0} sessions learned")
    if view.get("regex"):
        line += f"\nLearned shape: {view['regex']}"
    return line
