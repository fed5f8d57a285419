"""The gateway over real loopback HTTP in front of two simulated engines, with the real openai client."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import openai
import pytest

from pythia_sdk.protocol import AgentTags, encode_headers
from pythia_server.reports.command import fetch_report, load_report
from pythia_server.config import GatewayConfig
from tests.pythia_server.gateway.conftest import SIM_MODEL, RunningGateway, start_gateway, wait_for
from tests.pythia_server.gateway.servers import ServerThread

MODEL = SIM_MODEL
EXACT = {"ignore_eos": True}  # SGLang's flag: exactly max_tokens output tokens


def tags(session: str, agent: str, workflow: str = "deep_research") -> dict[str, str]:
    return encode_headers(AgentTags(workflow=workflow, session=session, agent=agent))


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def messages(role_prompt: str, question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": role_prompt}, {"role": "user", "content": question}]


def test_sync_client_gets_usage_streaming_and_not(sim_gateway: RunningGateway) -> None:
    seen: list[str] = []
    sim_gateway.gateway.add_call_listener(lambda record: seen.append(record.agent or ""))
    sim_gateway.gateway.add_call_listener(lambda record: 1 / 0)  # a broken listener changes nothing
    client = openai.OpenAI(base_url=sim_gateway.url + "/v1", api_key="unused", default_headers=tags("s1", "planner"))
    reply = client.chat.completions.create(model=MODEL, messages=messages("You plan.", "Plan a trip"), max_tokens=5,
                                           extra_body=EXACT)
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens == 5 and reply.usage.prompt_tokens > 0

    # Streaming without asking for usage: the gateway asked upstream for it but drops the usage chunk.
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages("You plan.", "Again"),
                                                 max_tokens=4, stream=True))
    assert chunks and all(c.choices for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks)

    # Streaming asking for usage: the last chunk carries it.
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages("You plan.", "Once more"),
                                                 max_tokens=3, stream=True, extra_body=EXACT,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    # A call is recorded once its stream has closed, which may be just after the client read it.
    wait_for(lambda: len(seen) >= 3)
    assert seen == ["planner"] * 3


async def test_async_client_streams_and_report_counts_sessions_agents_tokens(sim_gateway: RunningGateway) -> None:
    usage_by_agent: dict[str, list[int]] = {"planner": [0, 0], "researcher": [0, 0]}
    for session in ("a", "b", "c"):
        for agent in ("planner", "researcher"):
            client = openai.AsyncOpenAI(base_url=sim_gateway.url + "/v1", api_key="unused",
                                        default_headers=tags(session, agent))
            stream = await client.chat.completions.create(
                model=MODEL, messages=messages(f"You are the {agent}.", f"Session {session}"),
                max_tokens=6, stream=True, stream_options={"include_usage": True}, extra_body=EXACT)
            usage = None
            async for chunk in stream:
                usage = chunk.usage or usage
            assert usage is not None
            usage_by_agent[agent][0] += usage.prompt_tokens
            usage_by_agent[agent][1] += usage.completion_tokens
            await client.close()
    # A completions call without tags is recorded as untagged.
    plain = openai.OpenAI(base_url=sim_gateway.url + "/v1", api_key="unused")
    assert plain.completions.create(model=MODEL, prompt="hello there", max_tokens=2,
                                    extra_body=EXACT).usage.completion_tokens == 2

    for report in (fetch_report(sim_gateway.url), None):
        if report is None:  # the same numbers read straight from the store file
            report = load_report(str(sim_gateway.db_path))
        workflows = {w["workflow"]: w for w in report["workflows"]}
        assert list(workflows) == ["deep_research", "(untagged)"]
        research = workflows["deep_research"]
        assert research["sessions"] == 3 and research["calls"] == 6
        assert research["prompt_tokens"] == sum(u[0] for u in usage_by_agent.values())
        assert research["output_tokens"] == 36
        agents = {a["agent"]: a for a in research["agents"]}
        assert set(agents) == {"planner", "researcher"}
        assert agents["planner"]["calls"] == 3
        assert agents["planner"]["prompt_tokens_mean"] == round(usage_by_agent["planner"][0] / 3, 1)
        assert agents["researcher"]["output_tokens_mean"] == 6
        assert agents["planner"]["ttft_ms_mean"] is not None and agents["planner"]["e2e_ms_p95"] > 0
        assert research["jct_mean_s"] > 0
        assert workflows["(untagged)"]["calls"] == 1 and workflows["(untagged)"]["sessions"] == 0

    only = fetch_report(sim_gateway.url, workflow="deep_research")
    assert [w["workflow"] for w in only["workflows"]] == ["deep_research"]


def test_prompt_sent_twice_shows_cached_tokens(tmp_path: Path, sims: list[ServerThread]) -> None:
    # The serving default (GatewayConfig().policy), not the round robin the other tests pin.
    sim_gateway = start_gateway(tmp_path, [(f"sim-{i}", t.url) for i, t in enumerate(sims)],
                                policy=GatewayConfig().policy)
    client = openai.OpenAI(base_url=sim_gateway.url + "/v1", api_key="unused", default_headers=tags("s", "writer"))
    prompt = messages("You write long reports. " * 40, "Write about caches.")
    # The default policy (pythia, reactive until the workflow is learned) keeps a prefix on
    # the replica that has it cached, so every repeat is a hit.
    cached = [client.chat.completions.create(model=MODEL, messages=prompt, max_tokens=2)
              .usage.prompt_tokens_details.cached_tokens for _ in range(4)]
    assert cached[0] == 0 and min(cached[1:]) > 0
    report = fetch_report(sim_gateway.url)
    assert report["workflows"][0]["cache_hit_rate"] > 0.4
    sim_gateway.server.stop()


def test_generate_native_route_streaming_and_not(sim_gateway: RunningGateway) -> None:
    body = {"text": "The capital of France is", "sampling_params": {"max_new_tokens": 4, "ignore_eos": True}}
    request = urllib.request.Request(sim_gateway.url + "/generate", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json", **tags("g", "solo")})
    with urllib.request.urlopen(request, timeout=10) as response:
        data = json.loads(response.read())
    assert data["meta_info"]["completion_tokens"] == 4

    body["stream"] = True
    request = urllib.request.Request(sim_gateway.url + "/generate", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json", **tags("g", "solo")})
    with urllib.request.urlopen(request, timeout=10) as response:
        events = [line for line in response.read().decode().split("\n\n") if line]
    assert events[-1] == "data: [DONE]" and len(events) >= 2
    calls = get_json(sim_gateway.url + "/pythia/api/calls?session=g")["calls"]
    assert [c["route"] for c in calls] == ["generate", "generate"]
    assert all(c["output_tokens"] == 4 and c["finish_reason"] == "length" for c in calls)
    assert calls[1]["ttft_ms"] is not None


def test_models_health_metrics_and_api(sim_gateway: RunningGateway) -> None:
    client = openai.OpenAI(base_url=sim_gateway.url + "/v1", api_key="unused", default_headers=tags("m", "a"))
    assert [m.id for m in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    client.chat.completions.create(model=MODEL, messages=messages("x", "y"), max_tokens=1)
    assert get_json(sim_gateway.url + "/health")["replicas_healthy"] == 2
    with urllib.request.urlopen(sim_gateway.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    assert 'pythia_requests_total{route="chat",status="ok",workflow="deep_research"} 1.0' in text
    assert "pythia_e2e_seconds_bucket{le=\"0.5\",workflow=\"deep_research\"}" in text
    replicas = get_json(sim_gateway.url + "/pythia/api/replicas")["replicas"]
    assert [r["replica_id"] for r in replicas] == ["sim-0", "sim-1"] and all(r["healthy"] for r in replicas)
    assert all(r["engine_total_kv_tokens"] > 0 and r["engine_waiting_requests"] == 0 for r in replicas)
    sessions = get_json(sim_gateway.url + "/pythia/api/sessions?workflow=deep_research")["sessions"]
    assert [(s["session"], s["calls"]) for s in sessions] == [("m", 1)]
    with urllib.request.urlopen(sim_gateway.url + "/pythia/", timeout=30) as response:
        assert response.status == 200 and response.headers["content-type"].startswith("text/html")
    call = get_json(sim_gateway.url + "/pythia/api/calls")["calls"][0]
    assert call["workflow"] == "deep_research" and call["replica"] in ("sim-0", "sim-1") and call["prefix_blocks"] == 0


def test_forwarded_body_has_rid_and_no_nvext(gateway: RunningGateway, fakes) -> None:
    body = {"model": "fake-model", "messages": messages("x", "y"), "max_tokens": 1,
            "nvext": {"agent_context": {"workflow_type_id": "wf", "workflow_id": "sess-9", "program_id": "coder"}}}
    request = urllib.request.Request(gateway.url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    urllib.request.urlopen(request, timeout=10).read()
    sent = [r for fake, _ in fakes for r in fake.requests]
    assert len(sent) == 1 and "nvext" not in sent[0] and sent[0]["rid"].startswith("pythia-")
    call = get_json(gateway.url + "/pythia/api/calls")["calls"][0]
    assert (call["workflow"], call["session"], call["agent"]) == ("wf", "sess-9", "coder")
    assert call["call_id"] == sent[0]["rid"]
