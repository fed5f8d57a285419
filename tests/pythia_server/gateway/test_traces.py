"""Spans posted to the gateway's /v1/traces are stored, and a root workflow span ends its session."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import openai

from pythia_sdk.protocol import AgentTags, encode_headers
from pythia_server.store.sqlite import StoreReader
from tests.pythia_server.gateway.conftest import RunningGateway


def attr(key: str, value: str) -> dict:
    return {"key": key, "value": {"stringValue": value}}


def otlp_json(session: str, end_ns: int) -> bytes:
    span = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
            "name": "invoke_workflow research", "kind": 1, "startTimeUnixNano": str(end_ns - 10**9),
            "endTimeUnixNano": str(end_ns),
            "attributes": [attr("gen_ai.operation.name", "invoke_workflow"), attr("pythia.workflow", "research"),
                           attr("pythia.session", session)]}
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()


def post(url: str, data: bytes) -> int:
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def sessions(url: str) -> dict[str, dict]:
    with urllib.request.urlopen(url + "/pythia/api/sessions", timeout=10) as response:
        return {s["session"]: s for s in json.loads(response.read())["sessions"]}


def test_root_workflow_span_ends_its_session(gateway: RunningGateway) -> None:
    for session in ("done", "live"):
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused",
                               default_headers=encode_headers(AgentTags("research", session, "planner")))
        client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "x"}], max_tokens=1)
    end_ns = 1_900_000_000 * 10**9
    assert post(gateway.url + "/v1/traces", otlp_json("done", end_ns)) == 200
    state = sessions(gateway.url)
    assert state["done"]["ended_at"] == 1_900_000_000.0 and state["live"]["ended_at"] is None
    assert post(gateway.url + "/v1/traces", b"{broken") == 400
    reader = StoreReader(str(gateway.db_path))
    (span,) = reader.spans()
    assert (span["operation"], span["session"], span["workflow"]) == ("invoke_workflow", "done", "research")
    reader.close()
