"""The profiler learns live traffic: sessions through the gateway (simulated replicas) over loopback HTTP.

A structured workflow (planner, two researchers in parallel, writer, reviewer) is run
session by session with the real openai client; each session ends with its root
workflow span posted to /v1/traces. The JSON API then shows the learned graph, and the
mode flips from shadow to proactive once the (low, test) thresholds are met; the
report, the metrics and the offline rebuild from the store file agree with it.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from pythia_sdk.protocol import AgentTags, encode_headers
from pythia_server.cli import main
from pythia_server.reports.command import fetch_report, load_report
from tests.pythia_server.gateway.conftest import SIM_MODEL, RunningGateway, start_gateway
from tests.pythia_server.gateway.servers import ServerThread

WORKFLOW = "review_pipeline"
OUTPUT = {"planner": 6, "researcher": 12, "writer": 16, "reviewer": 4}
LOW_THRESHOLDS: dict[str, Any] = {"profiler_min_sessions": 3, "profiler_promote_top1": 0.6,
                                  "profiler_promote_coverage": 0.5, "profiler_quantile": 0.5,
                                  "profiler_confidence": 0.5}


@pytest.fixture
def learning_gateway(tmp_path: Path, sims: list[ServerThread]) -> Iterator[RunningGateway]:
    running = start_gateway(tmp_path, [(f"sim-{i}", t.url) for i, t in enumerate(sims)], **LOW_THRESHOLDS)
    yield running
    running.server.stop()


def get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def end_span(session: str, end_s: float) -> bytes:
    def attr(key: str, value: str) -> dict[str, Any]:
        return {"key": key, "value": {"stringValue": value}}

    end_ns = int(end_s * 1e9)
    span = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
            "name": f"invoke_workflow {WORKFLOW}", "kind": 1, "startTimeUnixNano": str(end_ns - 10**9),
            "endTimeUnixNano": str(end_ns),
            "attributes": [attr("gen_ai.operation.name", "invoke_workflow"), attr("pythia.workflow", WORKFLOW),
                           attr("pythia.session", session)]}
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()


def post_span(url: str, session: str) -> None:
    request = urllib.request.Request(url + "/v1/traces", data=end_span(session, time.time()),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


async def run_session(url: str, session: str, *, end: bool = True) -> None:
    """planner -> researcher x2 (parallel) -> writer -> reviewer, non-streaming calls."""

    async def call(agent: str, parent: str | None = None) -> None:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0,
                                    default_headers=encode_headers(AgentTags(WORKFLOW, session, agent, parent)))
        async with client:
            reply = await client.chat.completions.create(
                model=SIM_MODEL, max_tokens=OUTPUT[agent], extra_body={"ignore_eos": True},
                messages=[{"role": "system", "content": f"You are the {agent}. " * 20},
                          {"role": "user", "content": f"Session {session}."}])
            assert reply.usage is not None and reply.usage.completion_tokens == OUTPUT[agent]

    await call("planner")
    await asyncio.gather(call("researcher", "planner"), call("researcher", "planner"))
    await call("writer")
    await call("reviewer")
    if end:
        await asyncio.to_thread(post_span, url, session)


def workflows(url: str) -> dict[str, dict[str, Any]]:
    status, body = get_json(url + "/pythia/api/workflows")
    assert status == 200 and body["profiler"] is True
    return {w["workflow"]: w for w in body["workflows"]}


def test_sessions_through_the_gateway_teach_the_graph_and_promote_the_workflow(
        learning_gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    url = learning_gateway.url
    asyncio.run(run_session(url, "s0"))
    first = workflows(url)[WORKFLOW]
    assert first["mode"] == "shadow" and "of 3 sessions" in first["mode_reason"]
    assert first["sessions_learned"] == 1

    for i in range(1, 6):
        asyncio.run(run_session(url, f"s{i}"))
    learned = workflows(url)[WORKFLOW]
    assert learned["mode"] == "proactive", learned["mode_reason"]
    assert learned["sessions_learned"] == 6 and learned["calls_learned"] == 30
    assert learned["next_agent_top1"] >= 0.6 and learned["bound_coverage"] >= 0.5
    assert learned["regex"] == "planner researcher[x2] writer reviewer"
    graph = learned["graph"]
    assert {n["agent"] for n in graph["nodes"]} == {"planner", "researcher", "writer", "reviewer"}
    edges = {(e["src"], e["dst"]): e["p"] for e in graph["edges"]}
    assert edges[("planner", "researcher")] == pytest.approx(1.0)
    assert edges[("writer", "reviewer")] == pytest.approx(1.0)
    assert edges[(None, "planner")] == pytest.approx(1.0) and edges[("reviewer", None)] == pytest.approx(1.0)

    status, detail = get_json(url + f"/pythia/api/workflows/{WORKFLOW}")
    assert status == 200 and detail["mode"] == "proactive"
    assert detail["agents"]["researcher"]["samples"] == 12
    assert detail["agents"]["writer"]["output_bound_tokens"] == OUTPUT["writer"]
    assert detail["fanout"]["researcher"] == pytest.approx(2.0)
    assert detail["accuracy"] and detail["accuracy"][-1]["mode"] == "proactive"
    status, missing = get_json(url + "/pythia/api/workflows/nope")
    assert status == 404 and missing["error"]["code"] == "workflow_not_found"

    # The report carries the profiler's view; the store file alone rebuilds the same one.
    (live,) = fetch_report(url)["workflows"]
    assert live["profiler"]["mode"] == "proactive" and live["graph"]["source"] == "profiler"
    assert live["profiler"]["regex"] == learned["regex"]
    for field, value in LOW_THRESHOLDS.items():  # `report --db` uses the gateway's settings
        monkeypatch.setenv(f"PYTHIA_{field.upper()}", str(value))
    (offline,) = load_report(str(learning_gateway.db_path))["workflows"]
    assert offline["profiler"]["mode"] == "proactive"
    assert offline["profiler"]["regex"] == learned["regex"]
    assert offline["profiler"]["sessions_seen"] == 6
    writer = next(a for a in offline["agents"] if a["agent"] == "writer")
    assert writer["output_bound"] == OUTPUT["writer"] and writer["bound_coverage"] == 1.0
    html = learning_gateway.db_path.parent / "report.html"
    assert main(["report", "--db", str(learning_gateway.db_path), "--html", str(html)]) == 0
    assert "proactive" in html.read_text() and "researcher" in html.read_text()

    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert f'pythia_workflow_proactive{{workflow="{WORKFLOW}"}} 1.0' in metrics
    assert f'pythia_agent_requests_total{{agent="researcher",status="ok",workflow="{WORKFLOW}"}} 12.0' in metrics
    assert 'pythia_profiler_sessions_ended_total{reason="span"} 6.0' in metrics
    assert 'pythia_profiler_calls_total{outcome="observed"} 30.0' in metrics

    # The live page shows the mode too.
    with urllib.request.urlopen(url + f"/pythia/workflows/{WORKFLOW}", timeout=10) as response:
        page = response.read().decode()
    assert "proactive" in page


def test_non_streaming_calls_get_ttft_and_queue_time(learning_gateway: RunningGateway) -> None:
    asyncio.run(run_session(learning_gateway.url, "timed", end=False))
    status, body = get_json(learning_gateway.url + "/pythia/api/calls")
    assert status == 200 and len(body["calls"]) == 5
    for call in body["calls"]:
        assert call["stream"] is False and call["status"] == "ok"
        assert 0 < call["queue_ms"] <= call["ttft_ms"] <= call["e2e_ms"]


def test_idle_sessions_are_learned_and_a_broken_profiler_never_fails_a_call(
        tmp_path: Path, sims: list[ServerThread]) -> None:
    running = start_gateway(tmp_path, [("sim-0", sims[0].url)], session_idle_timeout_s=0.2, **LOW_THRESHOLDS)
    try:
        learning = running.gateway.learning
        assert learning is not None
        asyncio.run(run_session(running.url, "idle", end=False))
        deadline = time.monotonic() + 10
        while learning.profiler.live_sessions and time.monotonic() < deadline:
            time.sleep(0.05)
        assert workflows(running.url)[WORKFLOW]["sessions_learned"] == 1

        def broken(_call: Any) -> None:
            raise RuntimeError("profiler bug")

        learning.profiler.observe = broken  # type: ignore[method-assign]
        asyncio.run(run_session(running.url, "after", end=False))  # every call still answered
        status, _ = get_json(running.url + "/pythia/api/workflows")
        assert status == 200 and learning.failures == 5
        with urllib.request.urlopen(running.url + "/metrics", timeout=10) as response:
            assert 'pythia_profiler_calls_total{outcome="failed"} 5.0' in response.read().decode()
    finally:
        running.server.stop()


def test_profiler_off(tmp_path: Path, sims: list[ServerThread]) -> None:
    running = start_gateway(tmp_path, [("sim-0", sims[0].url)], profiler_enabled=False)
    try:
        asyncio.run(run_session(running.url, "plain", end=False))
        assert get_json(running.url + "/pythia/api/workflows") == (200, {"profiler": False, "workflows": []})
        assert get_json(running.url + f"/pythia/api/workflows/{WORKFLOW}")[0] == 404
        (report,) = fetch_report(running.url)["workflows"]
        assert report["profiler"] is None and report["graph"]["source"] == "observed"
    finally:
        running.server.stop()


def feed_record(workflow: str, session: str, agent: str, start_s: float, status: str = "ok") -> Any:
    from pythia_server.store.records import CallRecord

    return CallRecord(call_id=f"{workflow}-{session}-{agent}-{start_s}", workflow=workflow, session=session,
                      agent=agent, parent=None, call_tag=None, model="m", replica="r", route="chat", stream=False,
                      prompt_tokens=10, cached_tokens=0, output_tokens=5, queue_ms=1.0, ttft_ms=2.0, e2e_ms=100.0,
                      finish_reason="length", status=status, error=None, started_at=start_s,
                      finished_at=start_s + 0.1, block_size=64)


def test_the_feed_ends_sessions_by_span_or_idleness_and_bounds_its_queue() -> None:
    from pythia_server.config import GatewayConfig
    from pythia_server.gateway.learning import ProfilerFeed
    from pythia_server.gateway.metrics import GatewayMetrics

    now = [1000.0]
    feed = ProfilerFeed(GatewayConfig(session_idle_timeout_s=60.0), GatewayMetrics(), clock=lambda: now[0],
                        max_pending=4)
    for workflow in ("a", "b"):
        feed.on_call(feed_record(workflow, "shared", "x", 990.0))
    feed.on_call(feed_record("a", "quiet", "x", 995.0))
    feed.on_call(feed_record("a", "failed", "x", 995.0, status="error"))  # not learned, not queued
    feed.on_call(feed_record("a", "late", "x", 999.0))
    feed.on_call(feed_record("a", "over", "x", 999.0))  # the queue holds 4: dropped
    assert feed.dropped == 1
    feed.drain()
    assert feed.profiler.live_sessions == 4
    feed.end_session(None, "shared", 1000.0)  # a root span without a workflow tag: that id everywhere
    feed.drain()
    assert feed.profiler.live_sessions == 2
    assert {w.workflow: w.sessions_learned for w in feed.profiler.snapshot().workflows} == {"a": 1, "b": 1}
    now[0] = 1055.5  # "quiet" (last call ended at 995.1) has been idle for the 60 s timeout, "late" not yet
    feed.drain()
    assert feed.profiler.live_sessions == 1
    assert feed.profiler.model("a").snapshot().sessions_learned == 2  # type: ignore[union-attr]
