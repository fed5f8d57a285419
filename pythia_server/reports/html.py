"""The report as one self-contained HTML file: styles, script and charts inlined.

:func:`render_html` is what ``pythia-server report --html FILE`` writes and what the live
pages under ``/pythia/`` serve (with a refresh interval). The file loads nothing: a
Content-Security-Policy forbids every fetch except, on live pages, the page's own URL.
All client-supplied text (workflow, agent, session names) is escaped; the input is the
report dict of docs/reports.md, and sections whose data is absent say so.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

from pythia_server.reports import svg
from pythia_server.reports.svg import esc

__all__ = ["render_html", "render_workflow_section"]

_NONE = "\u2013"


def _static(name: str) -> str:
    return resources.files("pythia_server.reports").joinpath("static", name).read_text("utf-8")


def _num(value: Any, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return _NONE
    try:
        number = float(value)
    except (TypeError, ValueError):
        return esc(value)
    text = f"{number:,.{digits}f}"
    return esc(text + suffix)


def _pct(value: Any) -> str:
    return _NONE if value is None else f"{float(value):.0%}"


def _when(at_s: Any) -> str:
    if at_s is None:
        return _NONE
    stamp = dt.datetime.fromtimestamp(float(at_s), tz=dt.UTC)
    return stamp.strftime("%Y-%m-%d %H:%M:%S UTC")


def _card(label: str, value: str) -> str:
    return f'<div class="card"><div class="v">{value}</div><div class="k">{esc(label)}</div></div>'


def _panel(section: str, title: str, body: str) -> str:
    return (f'<div class="panel" data-section="{section}"><h3>{esc(title)}</h3>{body}</div>')


def _empty(text: str) -> str:
    return f'<p class="empty">{esc(text)}</p>'


def _mode(wf: Mapping[str, Any]) -> str:
    """shadow / proactive as the profiler says; "no profiler" when none reported."""
    return str((wf.get("profiler") or {}).get("mode") or "no profiler")


def _mode_class(mode: str) -> str:
    return mode if mode in ("shadow", "proactive") else "unknown"


# --- sections --------------------------------------------------------------------


def _graph_section(wf: Mapping[str, Any], index: int) -> str:
    graph = wf.get("graph") or {}
    if not graph.get("nodes"):
        return _panel("graph", "Learned graph", _empty("no sessions with tagged agents yet"))
    profiler = wf.get("profiler") or {}
    regex = profiler.get("regex") or graph.get("regex")
    if graph.get("source") == "profiler":
        note = f'learned by the profiler from {_num(profiler.get("sessions_seen"))} sessions'
    else:
        note = (f'observed from {_num(graph.get("sessions"))} sessions\' call records'
                + ("" if wf.get("profiler") else "; the profiler has not reported on this type"))
    loops = sum(1 for e in graph.get("edges", []) if e.get("loop"))
    fans = [n for n in graph.get("nodes", []) if (n.get("fanout_max") or 1) > 1]
    fan_text = f'fan-out at {", ".join(esc(n["agent"]) for n in fans)}' if fans else "no fan-out"
    facts = f'{len(graph["nodes"])} agents, {loops} loop edge{"s" * (loops != 1)}, {fan_text}'
    body = (svg.graph_chart(graph, uid=str(index))
            + f'<p class="note">{esc(note)}. {facts}. Edge labels are transition probabilities; '
              'dashed edges close loops; stacked nodes run in parallel (xN = widest fan-out).</p>'
            + (f'<code class="regex" title="regular-expression summary">{esc(regex)}</code>'
               if regex else ""))
    return _panel("graph", "Learned graph", body)


def _predictions_section(wf: Mapping[str, Any]) -> str:
    profiler = wf.get("profiler")
    if not profiler:
        return _panel("predictions", "Mode and prediction accuracy",
                      _empty("profiler not attached: this workflow type is served reactively (shadow)"))
    mode = _mode(wf)
    cards = (_card("mode", esc(mode)) + _card("next-agent top-1", _pct(profiler.get("next_agent_top1")))
             + _card("output-bound coverage", _pct(profiler.get("bound_coverage")))
             + _card("sessions learned", _num(profiler.get("sessions_seen"))))
    history = list(profiler.get("accuracy") or [])
    if history:
        series: dict[str, list[tuple[float, float]]] = {"next-agent top-1": [], "bound coverage": []}
        for point in history:
            for key, name in (("next_agent_top1", "next-agent top-1"), ("bound_coverage", "bound coverage")):
                if point.get(key) is not None:
                    series[name].append((float(point["at_s"]), float(point[key])))
        bands = []
        for i, point in enumerate(history):
            end = history[i + 1]["at_s"] if i + 1 < len(history) else point["at_s"]
            bands.append((float(point["at_s"]), float(end), str(point.get("mode") or "shadow")))
        chart = (f'<figure>{svg.line_chart(series, bands, "accuracy")}<figcaption>accuracy over time; '
                 'green background = proactive, grey = shadow</figcaption></figure>')
    else:
        chart = _empty("no accuracy history yet")
    reason = profiler.get("mode_reason")
    body = (f'<div class="cards">{cards}</div>'
            + (f'<p class="note">{esc(reason)}</p>' if reason else "") + chart)
    return _panel("predictions", "Mode and prediction accuracy", body)


def _jct_section(wf: Mapping[str, Any]) -> str:
    samples = list(wf.get("jct") or [])
    if not samples:
        return _panel("jct", "Job completion time", _empty("no sessions yet"))
    values = [float(s["jct_s"]) for s in samples]
    marks = {"mean": wf.get("jct_mean_s"), "p95": wf.get("jct_p95_s")}
    body = ('<div class="row">'
            f'<figure>{svg.cdf_chart(values, marks)}<figcaption>distribution (CDF) of '
            f'{len(values)} sessions</figcaption></figure>'
            f'<figure>{svg.scatter_trend([(float(s["start_s"]), float(s["jct_s"])) for s in samples])}'
            '<figcaption>trend: each dot a session, line = rolling median</figcaption></figure></div>')
    return _panel("jct", "Job completion time", body)


_AGENT_COLUMNS = ("agent", "calls", "prompt tok mean", "prompt p95", "output mean", "output p95",
                  "output max", "predicted bound", "coverage", "cache hit", "queue ms",
                  "TTFT ms", "TTFT p95", "e2e ms", "e2e p95")


def _agents_section(wf: Mapping[str, Any]) -> str:
    agents = list(wf.get("agents") or [])
    if not agents:
        return _panel("agents", "Agents", _empty("no agent calls yet"))
    head = "".join(f"<th>{esc(c)}</th>" for c in _AGENT_COLUMNS)
    rows = []
    for a in agents:
        bound, out_max = a.get("output_bound"), a.get("output_tokens_max")
        over = bound is not None and out_max is not None and out_max > bound
        hit = a.get("cache_hit_rate")
        cells = [
            esc(a.get("agent") or "(unknown)"), _num(a.get("calls")),
            _num(a.get("prompt_tokens_mean")), _num(a.get("prompt_tokens_p95")),
            _num(a.get("output_tokens_mean")), _num(a.get("output_tokens_p95")),
            f'<span class="{"over" if over else ""}">{_num(out_max)}</span>',
            _num(bound) if bound is not None else "no bound",
            _pct(a.get("bound_coverage")),
            f"{svg.meter(hit)} {_pct(hit)}",
            _num(a.get("queue_ms_mean"), 1), _num(a.get("ttft_ms_mean"), 1),
            _num(a.get("ttft_ms_p95"), 1), _num(a.get("e2e_ms_mean"), 1), _num(a.get("e2e_ms_p95"), 1),
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    body = (f'<div class="tablewrap"><table class="agents"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>'
            '<p class="note">predicted bound: the profiler\'s upper bound on output tokens; '
            'coverage: share of calls at or under it (red max = a call above the bound).</p>')
    return _panel("agents", "Agents", body)


def _timeline_section(wf: Mapping[str, Any], index: int, session_form: bool = False) -> str:
    lines = list(wf.get("timelines") or [])
    form = ""
    if session_form:  # live pages: any session by id (the server looks it up)
        form = ('<form method="get" class="session-form"><label>or any session <input name="session" '
                'placeholder="session id" maxlength="256"></label> <button type="submit">show</button></form>')
    note = wf.get("timeline_note")
    form += f'<p class="note">{esc(note)}</p>' if note else ""
    if not lines:
        return _panel("timeline", "Session timeline", form + _empty("no sessions yet"))
    options = "".join(
        f'<option value="{i}">{esc(t.get("label") or "session")}: {esc(t.get("session"))} '
        f'({float(t.get("jct_ms", 0)) / 1000:.2f} s)</option>' for i, t in enumerate(lines))
    pick = (f'<label>session <select class="timeline-pick" data-workflow="{index}">{options}'
            '</select></label>')
    legend = ('<p class="legendline"><i style="background:var(--queue)"></i>queue'
              '<i style="background:var(--prefill)"></i>to first token'
              '<i style="background:var(--decode)"></i>decode'
              '<i style="background:var(--gap)"></i>tool / think gap'
              '<i style="border:2px solid var(--bad)"></i>critical path</p>')
    figures = []
    for i, t in enumerate(lines):
        jct_ms = float(t.get("jct_ms") or 0)
        path_ms = float(t.get("critical_path_ms") or 0)
        gap_ms = sum(g["end_ms"] - g["start_ms"] for g in t.get("gaps", []))
        caption = (f'session {esc(t.get("session"))}: JCT {jct_ms / 1000:.2f} s, '
                   f'{len(t.get("calls", []))} calls, critical path {t.get("critical_path_calls", 0)} '
                   f'calls busy {path_ms / 1000:.2f} s, tool gaps {gap_ms / 1000:.2f} s'
                   + (" (first calls only)" if t.get("truncated") else ""))
        hidden = " hidden" if i else ""
        figures.append(f'<figure class="session-timeline" data-index="{i}"{hidden}>'
                       f'{svg.timeline_chart(t)}<figcaption>{caption}</figcaption></figure>')
    return _panel("timeline", "Session timeline", pick + form + legend + "".join(figures))


def _cache_section(wf: Mapping[str, Any]) -> str:
    actions = wf.get("cache_actions")
    if not actions:
        return _panel("cache", "Cache actions", _empty("no cache actions yet"))
    sent, hits, wasted = (int(actions.get(k) or 0) for k in ("warms_sent", "warm_hits", "warms_wasted"))
    pending = max(sent - hits - wasted, 0)
    cards = (_card("warms sent", _num(sent)) + _card("hits they produced", _num(hits))
             + _card("wasted warms", _num(wasted)) + _card("warmed tokens", _num(actions.get("warm_tokens")))
             + _card("hit tokens", _num(actions.get("hit_tokens"))))
    bar = ""
    if sent:
        w_hit, w_waste = 400 * hits / sent, 400 * wasted / sent
        bar = (f'<svg class="chart" viewBox="0 0 410 24" width="410" height="24" role="img"><title>warm outcomes</title>'
               f'<rect x="5" y="4" width="{w_hit:.1f}" height="16" fill="var(--good)"/>'
               f'<rect x="{5 + w_hit:.1f}" y="4" width="{w_waste:.1f}" height="16" fill="var(--bad)"/>'
               f'<rect x="{5 + w_hit + w_waste:.1f}" y="4" width="{400 * pending / sent:.1f}" height="16" '
               'fill="var(--line)"/></svg><p class="legendline"><i style="background:var(--good)"></i>hit'
               '<i style="background:var(--bad)"></i>wasted<i style="background:var(--line)"></i>pending</p>')
    recent = list(actions.get("recent") or [])[-20:]
    table = ""
    if recent:
        rows = "".join(
            f'<tr><td>{_when(r.get("at_s"))}</td><td>{esc(r.get("action", ""))}</td>'
            f'<td>{esc(r.get("agent", ""))}</td><td>{esc(r.get("replica", ""))}</td>'
            f'<td>{_num(r.get("tokens"))}</td><td>{esc(r.get("outcome", ""))}</td>'
            f'<td>{esc(r.get("reason", ""))}</td></tr>' for r in reversed(recent))
        table = ('<div class="tablewrap"><table class="texttable"><thead><tr><th>at</th><th>action</th><th>agent</th>'
                 '<th>replica</th><th>tokens</th><th>outcome</th><th>reason</th></tr></thead>'
                 f'<tbody>{rows}</tbody></table></div>')
    return _panel("cache", "Cache actions", f'<div class="cards">{cards}</div>{bar}{table}')


def _autoscaler_section(report: Mapping[str, Any], workflow: str) -> str:
    scaler = report.get("autoscaler")
    if not scaler or not scaler.get("enabled", True):
        return _panel("autoscaler", "Autoscaler", _empty("autoscaler off"))
    decisions = [d for d in scaler.get("decisions") or []
                 if d.get("workflow") in (None, workflow)]
    if not decisions:
        return _panel("autoscaler", "Autoscaler",
                      _empty(f'autoscaler on ({scaler.get("policy", "")}); no decisions yet'))
    points = [(float(decisions[0]["at_s"]), float(decisions[0].get("from_replicas") or 0))]
    points += [(float(d["at_s"]), float(d.get("to_replicas") or 0)) for d in decisions]
    rows = "".join(
        f'<tr><td>{_when(d.get("at_s"))}</td><td>{_num(d.get("from_replicas"))} \u2192 '
        f'{_num(d.get("to_replicas"))}</td><td>{esc(d.get("reason", ""))}</td></tr>'
        for d in reversed(decisions[-20:]))
    body = (f'<figure>{svg.step_chart(points, "replicas")}<figcaption>replicas over time '
            f'(policy {esc(scaler.get("policy", ""))}, whole pool)</figcaption></figure>'
            '<div class="tablewrap"><table class="texttable"><thead><tr><th>at</th><th>replicas</th><th>reason</th>'
            f'</tr></thead><tbody>{rows}</tbody></table></div>')
    return _panel("autoscaler", "Autoscaler", body)


def _replicas_section(report: Mapping[str, Any]) -> str:
    """Each replica's SGLang version and the features it lacks; absent for offline reports."""
    replicas = list(report.get("replicas") or [])
    if not replicas:
        return ""
    rows = []
    for r in replicas:
        missing = list(r.get("missing") or [])
        if not r.get("server_info", True):
            lacks = "no /server_info: features unknown"
        else:
            lacks = "".join(
                f'<div><span class="{"over" if m.get("used_by_policy") else ""}">{esc(m.get("feature", ""))}</span>'
                f' ({"needed by the policy" if m.get("used_by_policy") else "unused by the policy"}): '
                f'{esc(m.get("reason", ""))}</div>' for m in missing) or "nothing"
        rows.append(f'<tr><td>{esc(r.get("replica", ""))}</td><td>{esc(r.get("sglang_version") or "?")}</td>'
                    f'<td>{"degraded" if r.get("degraded") else "ok"}</td><td>{lacks}</td></tr>')
    degraded = sum(1 for r in replicas if r.get("degraded"))
    note = (f"{degraded} of {len(replicas)} replicas lack a feature the policy acts through; "
            "the gateway serves on without it" if degraded else "every replica has what the policy uses")
    body = ('<div class="tablewrap"><table class="texttable"><thead><tr><th>replica</th><th>SGLang</th>'
            f'<th>state</th><th>missing features</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
            f'<p class="note">{esc(note)} (red = needed by the running policy).</p>')
    return _panel("replicas", "Replicas", body)


def render_workflow_section(report: Mapping[str, Any], wf: Mapping[str, Any], index: int,
                            session_form: bool = False) -> str:
    """One workflow type's part of the report (a ``<section>``), used by the file and the pages."""
    name = str(wf.get("workflow") or "(untagged)")
    mode = _mode(wf)
    cards = "".join([
        _card("sessions", _num(wf.get("sessions"))), _card("calls", _num(wf.get("calls"))),
        _card("JCT mean", _num(wf.get("jct_mean_s"), 2, " s")),
        _card("JCT p95", _num(wf.get("jct_p95_s"), 2, " s")),
        _card("prefix cache hit", _pct(wf.get("cache_hit_rate"))),
        _card("prompt tokens", _num(wf.get("prompt_tokens"))),
        _card("output tokens", _num(wf.get("output_tokens"))),
    ])
    return (f'<section class="workflow" id="wf-{index}" data-workflow="{esc(name)}">'
            f'<h2>{esc(name)}<span class="badge-mode {_mode_class(mode)}">{esc(mode)}</span></h2>'
            f'<div class="cards">{cards}</div>'
            + _graph_section(wf, index) + _predictions_section(wf) + _jct_section(wf)
            + _agents_section(wf) + _timeline_section(wf, index, session_form) + _cache_section(wf)
            + _autoscaler_section(report, name) + "</section>")


def _overview(workflows: Sequence[Mapping[str, Any]], link: Any) -> str:
    rows = "".join(
        f'<tr><td><a href="{esc(link(i, wf))}">{esc(wf.get("workflow") or "(untagged)")}</a></td>'
        f'<td>{esc(_mode(wf))}</td><td>{_num(wf.get("sessions"))}</td><td>{_num(wf.get("calls"))}</td>'
        f'<td>{_num(wf.get("jct_mean_s"), 2)}</td><td>{_num(wf.get("jct_p95_s"), 2)}</td>'
        f'<td>{svg.meter(wf.get("cache_hit_rate"))} {_pct(wf.get("cache_hit_rate"))}</td>'
        f'<td>{esc((wf.get("graph") or {}).get("regex") or "")}</td></tr>'
        for i, wf in enumerate(workflows))
    return ('<div class="panel" data-section="overview"><h3>Workflow types</h3><div class="tablewrap">'
            '<table class="overview"><thead><tr><th>workflow</th><th>mode</th><th>sessions</th><th>calls</th>'
            '<th>JCT mean s</th><th>JCT p95 s</th><th>cache hit</th><th style="text-align:left">shape'
            f'</th></tr></thead><tbody>{rows}</tbody></table></div></div>')


def render_html(report: Mapping[str, Any], *, title: str = "Pythia report",
                only: str | None = None, refresh_s: float = 0,
                link: Any = None, nav_links: Sequence[tuple[str, str]] = (),
                session_form: bool = False) -> str:
    """The whole report as one HTML document that works offline.

    ``only`` renders a single workflow type; ``refresh_s`` > 0 makes it a live page that
    re-fetches itself; ``link(index, workflow)`` gives the overview's links (anchors in
    the file by default); ``nav_links`` are extra (href, text) entries for the top bar;
    ``session_form`` adds a form asking the server for any session's timeline (live pages).
    """
    workflows = list(report.get("workflows") or [])
    link = link or (lambda i, _wf: f"#wf-{i}")
    shown = [(i, wf) for i, wf in enumerate(workflows)
             if only is None or (wf.get("workflow") or "(untagged)") == only]
    connect = "'self'" if refresh_s > 0 else "'none'"
    form_src = "'self'" if session_form else "'none'"
    csp = (f"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
           f"img-src data:; connect-src {connect}; base-uri 'none'; "
           f"form-action {form_src}")
    nav = "".join(f'<a href="{esc(href)}">{esc(text)}</a>' for href, text in nav_links)
    nav += "".join(f'<a href="{esc(link(i, wf))}">{esc(wf.get("workflow") or "(untagged)")}</a>'
                   for i, wf in enumerate(workflows))
    if only is None:
        content = _overview(workflows, link) + "".join(
            render_workflow_section(report, wf, i) for i, wf in shown)
    else:
        content = "".join(render_workflow_section(report, wf, i, session_form) for i, wf in shown)
    if not workflows:
        content = _empty("no calls recorded yet: send tagged requests through the gateway")
    elif not shown:
        content = _empty(f"no workflow type named {only!r} yet")
    content = _replicas_section(report) + content
    live = (f'<span id="live-status">live, refreshed every {refresh_s:g} s</span>'
            if refresh_s > 0 else "")
    refresh_attr = f' data-refresh-s="{refresh_s:g}"' if refresh_s > 0 else ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'  # our constant
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{esc(title)}</title><style>{_static("report.css")}</style></head>'
        f'<body{refresh_attr}><header class="top"><h1>{esc(title)}</h1>'
        f'<span class="meta">generated <span id="generated-at">{_when(report.get("generated_at_s"))}'
        f'</span> &middot; {len(workflows)} workflow type{"s" * (len(workflows) != 1)}</span>{live}</header>'
        f'<nav class="workflows">{nav}</nav><main>{content}</main>'
        f'<script>{_static("report.js")}</script></body></html>'
    )
