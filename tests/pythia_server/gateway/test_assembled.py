"""Non-streaming calls are streamed upstream and answered whole: same shape, plus a TTFT.

Each answer through the gateway is compared with the simulated engine's own
non-streaming answer to the same request (asked directly), key by key.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import openai

from tests.pythia_server.gateway.conftest import SIM_MODEL, RunningGateway, calls
from tests.pythia_server.gateway.servers import ServerThread

MESSAGES = [{"role": "system", "content": "You summarise. " * 10}, {"role": "user", "content": "Summarise this."}]


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=20) as response:
        assert response.headers["content-type"].startswith("application/json")
        return json.loads(response.read())


def shape(value: Any) -> Any:
    """Keys and value types, recursively: what "OpenAI-shaped" means here."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__



def test_chat_answer_matches_the_engines_own_whole_answer(sim_gateway: RunningGateway,
                                                          sims: list[ServerThread]) -> None:
    via = openai.OpenAI(base_url=sim_gateway.url + "/v1", api_key="unused", max_retries=0)
    reply = via.chat.completions.create(model=SIM_MODEL, messages=MESSAGES, max_tokens=12,
                                        extra_body={"ignore_eos": True})
    assert reply.object == "chat.completion" and reply.model == SIM_MODEL
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 12
    assert reply.usage.prompt_tokens_details is not None and reply.usage.prompt_tokens_details.cached_tokens is not None

    body = {"model": SIM_MODEL, "messages": MESSAGES, "max_tokens": 12, "ignore_eos": True}
    gateway_raw = post(sim_gateway.url + "/v1/chat/completions", body)
    direct_raw = post(sims[0].url + "/v1/chat/completions", body)
    assert shape(gateway_raw) == shape(direct_raw)
    assert list(gateway_raw) == list(direct_raw)
    assert gateway_raw["usage"]["prompt_tokens"] == direct_raw["usage"]["prompt_tokens"]
    words = [len(raw["choices"][0]["message"]["content"].split()) for raw in (gateway_raw, direct_raw)]
    assert words == [12, 12]  # the simulated engine writes one word per token

    recorded = calls(sim_gateway.url)
    assert len(recorded) == 2
    for call in recorded:
        assert call["stream"] is False and call["output_tokens"] == 12 and call["cached_tokens"] is not None
        assert 0 < call["queue_ms"] <= call["ttft_ms"] <= call["e2e_ms"]


def test_completions_and_generate_answers_match_too(sim_gateway: RunningGateway, sims: list[ServerThread]) -> None:
    completion = {"model": SIM_MODEL, "prompt": "Once upon a time", "max_tokens": 5, "ignore_eos": True}
    assert shape(post(sim_gateway.url + "/v1/completions", completion)) == \
        shape(post(sims[0].url + "/v1/completions", completion))
    generate = {"text": "Once upon a time", "sampling_params": {"max_new_tokens": 6, "ignore_eos": True}}
    via, direct = post(sim_gateway.url + "/generate", generate), post(sims[1].url + "/generate", generate)
    assert list(via) == list(direct) and set(via["meta_info"]) == set(direct["meta_info"])
    assert len(via["output_ids"]) == via["meta_info"]["completion_tokens"] == 6
    recorded = calls(sim_gateway.url)
    assert {c["route"] for c in recorded} == {"completions", "generate"}
    assert all(c["ttft_ms"] is not None and c["output_tokens"] in (5, 6) for c in recorded)


def test_whole_answers_unchanged_when_assembly_is_off(tmp_path: Any, sims: list[ServerThread]) -> None:
    from tests.pythia_server.gateway.conftest import start_gateway

    running = start_gateway(tmp_path, [("sim-0", sims[0].url)], assemble_from_stream=False)
    try:
        body = {"model": SIM_MODEL, "messages": MESSAGES, "max_tokens": 4, "ignore_eos": True}
        assert post(running.url + "/v1/chat/completions", body)["usage"]["completion_tokens"] == 4
        (call,) = calls(running.url)
        assert call["ttft_ms"] is None and call["e2e_ms"] > 0
    finally:
        running.server.stop()


def test_a_replica_dying_mid_answer_is_a_502_error_body(tmp_path: Any) -> None:
    from tests.pythia_server.gateway.conftest import start_gateway
    from tests.pythia_server.gateway.servers import FakeSGLang

    dying = FakeSGLang(die_after_chunks=2, output_tokens=10)
    server = ServerThread(dying.app).start()
    running = start_gateway(tmp_path, [("dying", server.url)])
    try:
        client = openai.OpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0)
        try:
            client.chat.completions.create(model="fake-model", messages=MESSAGES, max_tokens=10)
        except openai.APIStatusError as exc:
            assert exc.status_code == 502
            assert exc.body["type"] == "upstream_error"  # type: ignore[index]
        else:
            raise AssertionError("a broken upstream stream must not look like an answer")
        (call,) = calls(running.url)
        # TTFT is set only if the first chunk was read before the connection broke: timing-dependent.
        assert call["status"] == "error" and call["stream"] is False
        assert dying.requests[0]["stream"] is True and dying.requests[0]["stream_options"] == {"include_usage": True}
    finally:
        running.server.stop()
        server.stop()
