"""The simulated SGLang server over real loopback HTTP, with the real openai client."""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, Self

import httpx
import openai
import pytest
import uvicorn

from pythia_server.engine.types import EngineConfig
from pythia_server.sglang_backend.sim_server import SimServerConfig, build_app


class ServerThread:
    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", loop="asyncio")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.app = app

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    config = SimServerConfig(model="sim-llama", speedup=200.0, engine=EngineConfig(max_total_num_tokens=200_000))
    with ServerThread(build_app(config)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)


def wait_until(predicate: Any, limit_s: float = 10.0) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def running(server: ServerThread) -> int:
    return httpx.get(server.url + "/v1/loads").json()["loads"][0]["num_running_reqs"]


SYSTEM = {"role": "system", "content": "You are the researcher. Find three sources and summarise them. " * 10}


def test_chat_completion_reports_usage_and_cache_hits(client: openai.OpenAI) -> None:
    messages = [SYSTEM, {"role": "user", "content": "Topic: radix trees."}]
    first = client.chat.completions.create(model="whatever-model", messages=messages, max_tokens=20)
    second = client.chat.completions.create(model="whatever-model", messages=messages, max_tokens=20)
    assert first.model == "whatever-model"  # echoed, not checked, as SGLang does
    assert first.choices[0].message.role == "assistant" and first.choices[0].message.content
    assert first.usage.prompt_tokens == second.usage.prompt_tokens > 100
    assert first.usage.completion_tokens <= 20
    assert first.choices[0].finish_reason in ("stop", "length")
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.usage.prompt_tokens_details.cached_tokens == second.usage.prompt_tokens - 1


def test_chat_streaming_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="sim-llama", messages=[{"role": "user", "content": "Stream please."}], max_tokens=15,
        stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["length"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 15
    assert len(text.split()) == 15


def test_completions_stream_and_not(client: openai.OpenAI) -> None:
    plain = client.completions.create(model="sim-llama", prompt="Once upon a time", max_tokens=6,
                                      extra_body={"ignore_eos": True})
    assert plain.usage.completion_tokens == 6 and len(plain.choices[0].text.split()) == 6
    assert plain.choices[0].finish_reason == "length"
    chunks = list(client.completions.create(model="sim-llama", prompt="Once upon a time", max_tokens=6,
                                            stream=True, stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True}))
    assert len("".join(c.choices[0].text for c in chunks if c.choices).split()) == 6
    assert chunks[-1].usage.completion_tokens == 6
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens > 0  # same prompt as just before


def test_generate_streams_cumulative_text_and_ends_with_done(server: ServerThread) -> None:
    body = {"text": "The plan is", "stream": True, "rid": "gen-1",
            "sampling_params": {"max_new_tokens": 5, "ignore_eos": True, "temperature": 0}}
    with httpx.stream("POST", server.url + "/generate", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert len(chunks) == 5
    assert all(b["text"].startswith(a["text"]) for a, b in itertools.pairwise(chunks))
    final = chunks[-1]["meta_info"]
    assert final["id"] == "gen-1" and final["completion_tokens"] == 5
    assert final["finish_reason"] == {"type": "length", "length": 5}
    assert chunks[0]["meta_info"]["finish_reason"] is None
    again = {**body, "rid": "gen-2"}
    with httpx.stream("POST", server.url + "/generate", json=again) as response:
        first = json.loads(next(line for line in response.iter_lines() if line).removeprefix("data: "))
    assert first["meta_info"]["cached_tokens"] == first["meta_info"]["prompt_tokens"] - 1  # known from the start


def test_generate_with_input_ids_and_prefill_only_warm(server: ServerThread) -> None:
    ids = list(range(1000, 1600))
    warm = httpx.post(server.url + "/generate", json={"input_ids": ids, "sampling_params": {"max_new_tokens": 0}})
    assert warm.status_code == 200 and warm.json()["meta_info"]["completion_tokens"] == 0
    hit = httpx.post(server.url + "/generate", json={"input_ids": ids, "sampling_params": {"max_new_tokens": 3}})
    meta = hit.json()["meta_info"]
    assert meta["prompt_tokens"] == 600 and meta["cached_tokens"] == 599
    assert len(hit.json()["output_ids"]) == meta["completion_tokens"]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {"model": "m"}, "messages"),
        ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": "a"},
         "max_tokens"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}, "model"),
        ("/v1/completions", {"model": "m", "prompt": 5}, "prompt"),
        ("/generate", {"text": "x", "sampling_params": {"max_new_tokens": 2, "wat": 1}}, "sampling_params"),
        ("/generate", {"sampling_params": {}}, "text"),
        ("/generate", {"text": "x", "sampling_params": {"max_new_tokens": -1}}, "sampling_params.max_new_tokens"),
    ],
)
def test_bad_input_gets_400_with_an_openai_error_body(server: ServerThread, path: str, body: dict, param: str) -> None:
    response = httpx.post(server.url + path, json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["code"] == 400
    assert error["message"]


def test_malformed_json_and_unknown_routes(server: ServerThread, client: openai.OpenAI) -> None:
    response = httpx.post(server.url + "/v1/chat/completions", content=b"{not json")
    assert response.status_code == 400 and "JSON" in response.json()["error"]["message"]
    assert httpx.get(server.url + "/nope").json()["error"]["code"] == 404
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], n=2)


def test_streaming_client_disconnect_aborts_the_request(server: ServerThread) -> None:
    body = {"text": "go on forever", "stream": True, "sampling_params": {"max_new_tokens": 100_000, "ignore_eos": True}}
    with httpx.stream("POST", server.url + "/generate", json=body) as response:
        lines = response.iter_lines()  # kept referenced: dropping the iterator closes the response
        next(line for line in lines if line.startswith("data:"))
        assert running(server) == 1
    assert wait_until(lambda: running(server) == 0)


def test_non_streaming_client_disconnect_aborts_the_request(server: ServerThread) -> None:
    payload = json.dumps({"model": "m", "messages": [{"role": "user", "content": "long"}], "max_tokens": 100_000,
                          "ignore_eos": True}).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
        assert wait_until(lambda: running(server) >= 1)
    assert wait_until(lambda: running(server) == 0)


def test_abort_request_endpoint_ends_a_running_stream(server: ServerThread) -> None:
    body = {"text": "abort me", "rid": "to-abort", "stream": True,
            "sampling_params": {"max_new_tokens": 100_000, "ignore_eos": True}}
    with httpx.stream("POST", server.url + "/generate", json=body) as response:
        lines = response.iter_lines()
        next(line for line in lines if line.startswith("data:"))
        assert httpx.post(server.url + "/abort_request", json={"rid": "to-abort"}).status_code == 200
        rest = [line for line in lines if line]
    assert rest[-1] == "data: [DONE]"
    assert json.loads(rest[-2].removeprefix("data: "))["meta_info"]["finish_reason"]["type"] == "abort"


def test_info_loads_metrics_and_flush(server: ServerThread, client: openai.OpenAI) -> None:
    assert httpx.get(server.url + "/health").status_code == 200
    assert httpx.get(server.url + "/health_generate").status_code == 200
    assert [m.id for m in client.models.list().data] == ["sim-llama"]
    for path in ("/server_info", "/get_server_info"):
        info = httpx.get(server.url + path).json()
        assert info["version"] == "0.5.23" and info["page_size"] == 1
        assert info["max_total_num_tokens"] == 200_000 and info["chunked_prefill_size"] == 8192
        assert info["schedule_policy"] == "fcfs"
        assert info["disable_priority_preemption"] is False and info["random_seed"] == 0
        assert not {"enable_priority_preemption", "seed", "clip_max_new_tokens", "eos_token_id"} & set(info)
        assert info["pythia_sim"]["calibration"]
    for path in ("/model_info", "/get_model_info"):
        assert httpx.get(server.url + path).json()["is_generation"] is True
    loads = httpx.get(server.url + "/v1/loads").json()
    assert loads["num_accelerators"] == 1 and loads["loads"][0]["max_total_num_tokens"] == 200_000
    (rank,) = loads["loads"]
    assert rank["dp_rank"] == 0 and rank["queues"]["prealloc_ready"] == 0
    assert not {"dp_rank_count", "aggregate", "num_total_reqs"} & (set(loads) | set(rank))
    client.completions.create(model="m", prompt="count me", max_tokens=2, extra_body={"ignore_eos": True})
    metrics = httpx.get(server.url + "/metrics").text
    for name in ("sglang:num_running_reqs", "sglang:num_queue_reqs", "sglang:token_usage", "sglang:cache_hit_rate",
                 "sglang:prompt_tokens_total", "sglang:generation_tokens_total",
                 "sglang:time_to_first_token_seconds_bucket"):
        assert name in metrics
    generated = next(line for line in metrics.splitlines() if line.startswith("sglang:generation_tokens_total"))
    assert float(generated.rsplit(" ", 1)[1]) >= 2
    assert wait_until(lambda: running(server) == 0)
    assert httpx.post(server.url + "/flush_cache").status_code == 200
    cached_tokens = httpx.get(server.url + "/v1/loads").json()["loads"][0]
    assert cached_tokens["num_used_tokens"] == 0


async def test_kv_events_reach_a_subscriber_with_the_gateways_block_hashes() -> None:
    """The seam to sglang_backend.kv_events: what the engine caches, a subscriber's index holds."""
    import asyncio

    from pythia_server.sglang_backend.kv_index import (
        KvEventHub,
        endpoints_from_server_info,
    )
    from pythia_server.tokens import apply_chat_template, block_hashes, tokenize

    kv_config = json.dumps({"publisher": "zmq", "endpoint": "tcp://127.0.0.1:*",
                            "replay_endpoint": "tcp://127.0.0.1:*", "topic": ""})
    config = SimServerConfig(speedup=500.0, engine=EngineConfig(page_size=16), kv_events_config=kv_config)
    with ServerThread(build_app(config)) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            info = (await http.get("/server_info")).json()
            assert info["kv_events"]["block_size"] == 16
            (pub, replay, topic), = endpoints_from_server_info(info, "127.0.0.1")
            hub = KvEventHub()
            await hub.attach("sim-0", pub, replay, topic)
            try:
                messages = [SYSTEM, {"role": "user", "content": "index me"}]
                hashes = block_hashes(tokenize(apply_chat_template(messages)), 16)
                response = await http.post("/v1/chat/completions", json={
                    "model": "m", "messages": messages, "max_tokens": 4})
                assert response.status_code == 200
                for _ in range(200):
                    if hub.index.matched_blocks("sim-0", hashes) == len(hashes):
                        break
                    await asyncio.sleep(0.02)
                assert hub.index.matched_blocks("sim-0", hashes) == len(hashes)
                assert (await http.post("/flush_cache")).status_code == 200
                for _ in range(200):
                    if hub.index.block_count("sim-0") == 0:
                        break
                    await asyncio.sleep(0.02)
                assert hub.index.block_count("sim-0") == 0
            finally:
                await hub.detach("sim-0")


def test_strict_model_name_rejects_other_models() -> None:
    config = SimServerConfig(model="served", speedup=500.0, strict_model_name=True)
    with ServerThread(build_app(config)) as strict:
        client = openai.OpenAI(base_url=strict.url + "/v1", api_key="none", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="The model `other` does not exist"):
            client.chat.completions.create(model="other", messages=[{"role": "user", "content": "hi"}])
        ok = client.completions.create(model="served:adapter", prompt="hi", max_tokens=2)
        assert ok.usage.completion_tokens <= 2


def test_open_and_close_session(server: ServerThread) -> None:
    assert httpx.post(server.url + "/open_session", json={"session_id": "s-1"}).json() == "s-1"
    assert isinstance(httpx.post(server.url + "/open_session", json={}).json(), str)
    assert httpx.post(server.url + "/close_session", json={"session_id": "s-1"}).status_code == 200
    bad = httpx.post(server.url + "/close_session", json={})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "session_id"
