"""Bad input gets a 4xx with OpenAI's error body; malformed tags never fail a request."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pythia_sdk.protocol import HEADER_AGENT, HEADER_SESSION, HEADER_WORKFLOW
from tests.pythia_server.gateway.conftest import RunningGateway, start_gateway
from tests.pythia_server.gateway.servers import FakeSGLang, ServerThread

GOOD = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def post(url: str, data: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def with_(**changes: object) -> bytes:
    body = dict(GOOD)
    for key, value in changes.items():
        if value is ...:
            body.pop(key)
        else:
            body[key] = value
    return json.dumps(body).encode()


@pytest.mark.parametrize(("path", "data", "status", "param"), [
    ("/v1/chat/completions", b"{not json", 400, None),
    ("/v1/chat/completions", b"", 400, None),
    ("/v1/chat/completions", b"[1, 2]", 400, None),
    ("/v1/chat/completions", with_(model=...), 400, "model"),
    ("/v1/chat/completions", with_(model=7), 400, "model"),
    ("/v1/chat/completions", with_(model="no-such-model"), 404, "model"),
    ("/v1/chat/completions", with_(messages=...), 400, "messages"),
    ("/v1/chat/completions", with_(messages="hi"), 400, "messages"),
    ("/v1/chat/completions", with_(messages=[{"content": "no role"}]), 400, "messages[0].role"),
    ("/v1/chat/completions", with_(stream="yes"), 400, "stream"),
    ("/v1/chat/completions", with_(max_tokens=-1), 400, "max_tokens"),
    ("/v1/chat/completions", with_(max_tokens="10"), 400, "max_tokens"),
    ("/v1/chat/completions", with_(stream_options=True), 400, "stream_options"),
    ("/v1/completions", json.dumps({"model": "fake-model"}).encode(), 400, "prompt"),
    ("/v1/completions", json.dumps({"model": "fake-model", "prompt": {"a": 1}}).encode(), 400, "prompt"),
    ("/generate", json.dumps({"sampling_params": {}}).encode(), 400, "text"),
    ("/generate", json.dumps({"text": "x", "sampling_params": {"max_new_tokens": 1.5}}).encode(), 400,
     "sampling_params.max_new_tokens"),
])
def test_bad_requests_get_openai_error_bodies(shared_gateway: RunningGateway, path: str, data: bytes, status: int,
                                              param: str | None) -> None:
    code, body = post(shared_gateway.url + path, data)
    assert code == status
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["message"]
    assert body["error"]["param"] == param
    if status == 404:
        assert body["error"]["code"] == "model_not_found"


def test_unknown_route_and_method_use_the_same_body(gateway: RunningGateway) -> None:
    code, body = post(gateway.url + "/v1/nothing", b"{}")
    assert code == 404 and body["error"]["type"] == "not_found_error"
    try:
        urllib.request.urlopen(gateway.url + "/v1/chat/completions", timeout=10)
    except urllib.error.HTTPError as exc:
        assert exc.code == 405 and json.loads(exc.read())["error"]["type"] == "invalid_request_error"


def test_oversized_body_is_refused_while_reading(tmp_path: Path) -> None:
    fake = FakeSGLang()
    replica = ServerThread(fake.app).start()
    running = start_gateway(tmp_path, [("r0", replica.url)], max_body_bytes=1000)
    try:
        big = with_(messages=[{"role": "user", "content": "x" * 2000}])
        code, body = post(running.url + "/v1/chat/completions", big)
        assert code == 413 and body["error"]["type"] == "invalid_request_error"
        assert "1000 bytes" in body["error"]["message"]
        # Chunked (no content-length): refused once the limit is crossed.
        chunks = iter([big[:600], big[600:]])
        request = urllib.request.Request(running.url + "/v1/chat/completions", data=chunks,
                                         headers={"content-type": "application/json",
                                                  "transfer-encoding": "chunked"})
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=10)
        assert caught.value.code == 413
        assert fake.requests == []
        assert post(running.url + "/v1/chat/completions", with_())[0] == 200
    finally:
        running.server.stop()
        replica.stop()


def test_malformed_tags_are_dropped_counted_and_never_fail(gateway: RunningGateway) -> None:
    headers = {HEADER_WORKFLOW.title(): "research", HEADER_SESSION: "x" * 500, HEADER_AGENT: "bad\u00e9agent"}
    body = dict(GOOD, nvext={"agent_context": {"workflow_id": 12.5}, "agent_hints": {"priority": "high"}})
    code, reply = post(gateway.url + "/v1/chat/completions", json.dumps(body).encode(),
                       headers)
    assert code == 200 and reply["usage"]["completion_tokens"] == 2
    with urllib.request.urlopen(gateway.url + "/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert 'pythia_dropped_tags_total{reason="too_long"} 1.0' in metrics
    assert 'pythia_dropped_tags_total{reason="wrong_type"} 2.0' in metrics
    assert 'pythia_dropped_tags_total{reason="bad_charset"} 1.0' in metrics
    with urllib.request.urlopen(gateway.url + "/pythia/api/calls", timeout=10) as response:
        call = json.loads(response.read())["calls"][0]
    assert (call["workflow"], call["session"], call["agent"]) == ("research", None, None)


def test_calls_beyond_the_inflight_limit_get_429(tmp_path: Path) -> None:
    fake = FakeSGLang(token_delay_s=0.05, output_tokens=100)
    replica = ServerThread(fake.app).start()
    running = start_gateway(tmp_path, [("r0", replica.url)], max_inflight_requests=1)
    try:
        import httpx

        url = running.url + "/v1/chat/completions"
        long_stream = dict(GOOD, stream=True, max_tokens=100)
        with httpx.Client(timeout=10) as http, http.stream("POST", url, json=long_stream) as first:
            chunks = first.iter_bytes()  # keep a reference: dropping it closes the connection
            assert next(chunks).startswith(b"data: ")
            code, body = post(running.url + "/v1/chat/completions", with_())
            assert code == 429 and body["error"]["type"] == "overloaded_error"
        code, body = post(running.url + "/v1/chat/completions", with_())
        deadline = 50
        while code == 429 and deadline:  # the abandoned stream is finished asynchronously
            import time

            time.sleep(0.05)
            deadline -= 1
            code, body = post(running.url + "/v1/chat/completions", with_())
        assert code == 200
    finally:
        running.server.stop()
        replica.stop()
