"""The wire protocol: what the SDK writes is what the gateway reads; bad values never raise."""

from __future__ import annotations

from pathlib import Path

import pytest

from pythia_sdk import protocol
from pythia_sdk.protocol import AgentTags, Hints, encode_headers, merge_headers, parse_headers, parse_nvext, parse_request

REPO = Path(__file__).resolve().parents[2]


def test_round_trip() -> None:
    tags = AgentTags("deep_research", "s-1", "planner", parent="root", call="c7")
    parsed, problems = parse_headers(encode_headers(tags))
    assert parsed == tags
    assert problems == []
    assert parsed.complete


def test_header_names_case_insensitive() -> None:
    parsed, problems = parse_headers([("X-Pythia-Workflow", "wf"), ("X-PYTHIA-AGENT", "Chief Product Officer")])
    assert parsed == AgentTags(workflow="wf", agent="Chief Product Officer")
    assert not parsed.complete
    assert problems == []


@pytest.mark.parametrize(
    "value, reason",
    [
        ("", "empty"),
        ("x" * (protocol.MAX_ID_LENGTH + 1), "longer"),
        ("a\nb", "characters"),
        ('quote"d', "characters"),
        (" padded", "characters"),
        ("naïve", "characters"),
    ],
)
def test_malformed_values_are_dropped_and_reported(value: str, reason: str) -> None:
    headers = encode_headers(AgentTags("wf", "s", "a"))
    headers[protocol.HEADER_AGENT] = value
    parsed, problems = parse_headers(headers)
    assert parsed == AgentTags("wf", "s", None)
    assert len(problems) == 1 and reason in problems[0].reason
    assert problems[0].source == protocol.HEADER_AGENT


def test_encode_leaves_out_invalid_fields() -> None:
    assert protocol.HEADER_AGENT not in encode_headers(AgentTags("wf", "s", "bad\r\nvalue"))


def test_merge_never_overwrites_the_callers_headers() -> None:
    caller = {"X-Pythia-Agent": "mine", "Authorization": "Bearer t"}
    merged = merge_headers(caller, AgentTags("wf", "s", "theirs"))
    assert merged["X-Pythia-Agent"] == "mine"
    assert protocol.HEADER_AGENT not in merged
    assert merged[protocol.HEADER_WORKFLOW] == "wf"
    assert merged["Authorization"] == "Bearer t"
    assert caller == {"X-Pythia-Agent": "mine", "Authorization": "Bearer t"}


def test_nvext_agent_context_and_hints() -> None:
    body = {
        "model": "m",
        "nvext": {
            "agent_context": {"workflow_type_id": "coding", "workflow_id": 42, "program_id": "coder", "parent_program_id": "main"},
            "agent_hints": {"priority": 3, "osl": 256, "speculative_prefill": True},
        },
    }
    tags, hints, problems = parse_nvext(body)
    assert tags == AgentTags("coding", "42", "coder", parent="main")
    assert hints == Hints(priority=3, output_tokens=256, speculative_prefill=True)
    assert problems == []


@pytest.mark.parametrize(
    "nvext",
    [
        "not an object",
        {"agent_context": [1, 2]},
        {"agent_context": {"workflow_type_id": {"x": 1}}},
        {"agent_hints": {"priority": "high", "osl": -1, "speculative_prefill": "yes"}},
    ],
)
def test_nvext_garbage_never_raises(nvext: object) -> None:
    tags, hints, problems = parse_nvext({"nvext": nvext})
    assert problems
    assert tags == AgentTags()
    assert hints == Hints()


def test_headers_win_over_body() -> None:
    tags, _, problems = parse_request(
        {protocol.HEADER_AGENT: "from-header"},
        {"nvext": {"agent_context": {"program_id": "from-body", "workflow_type_id": "wf"}}},
    )
    assert tags.agent == "from-header" and tags.workflow == "wf"
    assert problems == []


def test_unreadable_header_mapping_is_a_problem_not_a_crash() -> None:
    class Hostile(dict):
        def items(self):  # type: ignore[override]
            raise RuntimeError("boom")

    tags, problems = parse_headers(Hostile())
    assert tags == AgentTags() and problems


def test_no_other_module_spells_a_header_name() -> None:
    offenders = []
    for package in ("pythia_sdk", "pythia_server"):
        for path in (REPO / package).rglob("*.py"):
            if path.name == "protocol.py" and path.parent.name == "pythia_sdk":
                continue
            if "x-pythia-" in path.read_text(encoding="utf-8").lower():
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []
