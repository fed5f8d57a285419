"""Replicas that are down, broken or abandoned mid-stream; records survive all of it."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import httpx
import openai
import pytest

from pythia_sdk.protocol import AgentTags, encode_headers
from pythia_server.sglang_backend.sim_server import SimServerConfig
from pythia_server.sglang_backend.sim_server import build_app as build_sim_app
from pythia_server.store.sqlite import Store, StoreReader
from tests.pythia_server.gateway.conftest import calls, start_gateway, wait_for
from tests.pythia_server.gateway.servers import (
    FakeSGLang,
    ServerThread,
    closed_port,
    garbage_app,
)

MODEL = "fake-model"
MESSAGES = [{"role": "user", "content": "Tell me a long story"}]
HEADERS = encode_headers(AgentTags(workflow="wf", session="s1", agent="teller"))




def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", default_headers=HEADERS, max_retries=0)


def test_a_dead_replica_is_skipped_and_marked_unhealthy(tmp_path: Path) -> None:
    fake = FakeSGLang()
    live = ServerThread(fake.app).start()
    dead_url = f"http://127.0.0.1:{closed_port()}"
    running = start_gateway(tmp_path, [("dead", dead_url), ("live", live.url)])
    try:
        gateway = running.gateway
        assert gateway.pool is not None
        # Probed dead at start: never routed to.
        assert not gateway.pool.get("dead").healthy
        # Pretend the probe had passed: the first call to it fails to connect and is retried.
        gateway.pool.get("dead").healthy = True
        gateway.pool.get("dead").models = gateway.pool.get("live").models
        for _ in range(4):
            assert client(running.url).chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2)
        assert not gateway.pool.get("dead").healthy
        assert {c["replica"] for c in calls(running.url)} == {"live"}
        assert len(fake.requests) == 4
    finally:
        running.server.stop()
        live.stop()


def test_all_replicas_down_gives_503_and_the_call_is_recorded(tmp_path: Path) -> None:
    fake = FakeSGLang()
    replica = ServerThread(fake.app).start()
    running = start_gateway(tmp_path, [("r0", replica.url)])
    try:
        assert client(running.url).chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1)
        replica.stop()
        with pytest.raises(openai.APIStatusError) as caught:
            client(running.url).chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1)
        assert caught.value.status_code == 503
        assert caught.value.body["type"] == "upstream_unavailable"
        recorded = calls(running.url)
        assert [c["status"] for c in recorded] == ["ok", "error"]
    finally:
        running.server.stop()


def test_a_garbage_answer_is_502_and_quarantines_the_replica(tmp_path: Path) -> None:
    fake = FakeSGLang()
    good = ServerThread(fake.app).start()
    bad = ServerThread(garbage_app()).start()
    # Round robin (bad first); a long quarantine so the bad replica stays out for the test.
    running = start_gateway(tmp_path, [("bad", bad.url), ("good", good.url)], policy="sglang",
                            quarantine_base_s=60.0)
    try:
        outcomes = []
        for _ in range(4):
            try:
                client(running.url).chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1)
                outcomes.append(200)
            except openai.APIStatusError as exc:
                outcomes.append(exc.status_code)
                assert exc.body["type"] == "upstream_error"
        assert outcomes == [502, 200, 200, 200]
        assert [c["status"] for c in calls(running.url)] == ["error", "ok", "ok", "ok"]
        assert running.gateway.pool is not None
        bad_replica = running.gateway.pool.get("bad")
        assert not bad_replica.healthy and bad_replica.quarantines == 1 and "not JSON" in bad_replica.reason
    finally:
        running.server.stop()
        good.stop()
        bad.stop()


def test_a_replica_dying_mid_stream_ends_the_stream_with_an_error(tmp_path: Path) -> None:
    dying = FakeSGLang(die_after_chunks=2, output_tokens=10)
    healthy = FakeSGLang()
    servers = [ServerThread(dying.app).start(), ServerThread(healthy.app).start()]
    running = start_gateway(tmp_path, [("dying", servers[0].url), ("healthy", servers[1].url)])
    try:
        with pytest.raises(openai.APIError):
            for _ in client(running.url).chat.completions.create(model=MODEL, messages=MESSAGES, stream=True):
                pass
        assert client(running.url).chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1)
        recorded = calls(running.url)
        assert [(c["replica"], c["status"]) for c in recorded] == [("dying", "error"), ("healthy", "ok")]
    finally:
        running.server.stop()
        for server in servers:
            server.stop()


def test_a_replica_dying_before_its_first_byte_is_retried_elsewhere(tmp_path: Path) -> None:
    dying = FakeSGLang(die_after_chunks=0)
    healthy = FakeSGLang()
    servers = [ServerThread(dying.app).start(), ServerThread(healthy.app).start()]
    # No probe between the calls: a passing /health would let the dying replica back in.
    running = start_gateway(tmp_path, [("dying", servers[0].url), ("healthy", servers[1].url)], policy="sglang",
                            health_interval_s=60.0)
    try:
        for _ in range(2):  # round robin: one first try lands on the dying replica
            chunks = list(client(running.url).chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
            assert chunks
        assert len(dying.requests) == 1
        assert [(c["replica"], c["status"]) for c in calls(running.url)] == [("healthy", "ok")] * 2
    finally:
        running.server.stop()
        for server in servers:
            server.stop()


def test_client_disconnect_mid_stream_aborts_the_engine_request(tmp_path: Path) -> None:
    fake = FakeSGLang(token_delay_s=0.05, output_tokens=200)
    replica = ServerThread(fake.app).start()
    running = start_gateway(tmp_path, [("r0", replica.url)])
    try:
        body = {"model": MODEL, "messages": MESSAGES, "stream": True}
        url = running.url + "/v1/chat/completions"
        with httpx.Client(timeout=10) as http, http.stream("POST", url, json=body, headers=HEADERS) as response:
            first = next(response.iter_bytes())
            assert first.startswith(b"data: ")
        assert wait_for(lambda: bool(calls(running.url)))
        (call,) = calls(running.url)
        assert call["status"] == "aborted" and call["ttft_ms"] is not None
        rid = call["call_id"]
        assert wait_for(lambda: rid in fake.aborted and rid in fake.cut_off and not fake.live)
    finally:
        running.server.stop()
        replica.stop()


def test_the_store_survives_a_restart(tmp_path: Path) -> None:
    fake = FakeSGLang()
    replica = ServerThread(fake.app).start()
    try:
        running = start_gateway(tmp_path, [("r0", replica.url)])
        for _ in range(3):
            client(running.url).chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2)
        running.server.stop()  # the lifespan flushes and closes the store
        reader = StoreReader(str(running.db_path))
        assert len(reader.calls()) == 3 and reader.sessions()[0].calls == 3
        reader.close()

        again = start_gateway(tmp_path, [("r0", replica.url)])
        client(again.url).chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2)
        assert len(calls(again.url)) == 4
        again.server.stop()
        store = Store(str(again.db_path))
        assert store.sessions()[0].calls == 4
        store.close()
    finally:
        replica.stop()


def test_client_disconnect_frees_the_request_on_the_simulated_engine(tmp_path: Path) -> None:
    sim = ServerThread(build_sim_app(SimServerConfig(model="sim-model", speedup=1.0))).start()
    running = start_gateway(tmp_path, [("sim-0", sim.url)])

    def running_requests() -> int:
        with urllib.request.urlopen(sim.url + "/v1/loads", timeout=10) as response:
            return json.loads(response.read())["loads"][0]["num_running_reqs"]

    try:
        body = {"model": "sim-model", "messages": MESSAGES, "stream": True, "max_tokens": 4000, "ignore_eos": True}
        url = running.url + "/v1/chat/completions"
        with httpx.Client(timeout=10) as http, http.stream("POST", url, json=body, headers=HEADERS) as response:
            chunks = response.iter_bytes()
            assert next(chunks).startswith(b"data: ")
            assert running_requests() == 1
        assert wait_for(lambda: running_requests() == 0)
        assert wait_for(lambda: bool(calls(running.url)))
        (call,) = calls(running.url)
        assert call["status"] == "aborted" and call["replica"] == "sim-0"
    finally:
        running.server.stop()
        sim.stop()


def test_a_client_leaving_a_whole_response_frees_the_engine_request(tmp_path: Path) -> None:
    sim = ServerThread(build_sim_app(SimServerConfig(model="sim-model", speedup=1.0))).start()
    running = start_gateway(tmp_path, [("sim-0", sim.url)])

    def running_requests() -> int:
        with urllib.request.urlopen(sim.url + "/v1/loads", timeout=10) as response:
            return json.loads(response.read())["loads"][0]["num_running_reqs"]

    try:
        body = {"model": "sim-model", "messages": MESSAGES, "max_tokens": 4000, "ignore_eos": True}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(running.url + "/v1/chat/completions", json=body, headers=HEADERS, timeout=0.5)
        assert wait_for(lambda: bool(calls(running.url)))
        (call,) = calls(running.url)
        assert call["status"] == "aborted"
        assert wait_for(lambda: running_requests() == 0)
    finally:
        running.server.stop()
        sim.stop()
