"""Whole responses assembled from stream chunks: the shape a non-streaming call would get."""

from __future__ import annotations

from typing import Any

import pytest

from pythia_server.gateway.assemble import GenerateAssembler, OpenAIAssembler, can_assemble


def chunk(choices: list[dict[str, Any]], usage: Any = None, **top: Any) -> dict[str, Any]:
    return {"id": "rid-1", "object": "chat.completion.chunk", "created": 7, "model": "m",
            "choices": choices, "usage": usage, **top}


USAGE = {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13, "prompt_tokens_details": {"cached_tokens": 4}}


def test_chat_chunks_become_one_chat_completion() -> None:
    a = OpenAIAssembler(chat=True)
    a.feed(chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                   "finish_reason": None, "matched_stop": None}], system_fingerprint="fp"))
    a.feed(chunk([{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]))
    a.feed(chunk([{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop", "matched_stop": 2}]))
    a.feed(chunk([], usage=USAGE))
    a.feed(None)  # [DONE]
    body = a.build()
    assert list(body) == ["id", "object", "created", "model", "choices", "system_fingerprint", "usage"]
    assert (body["id"], body["object"], body["created"], body["model"]) == ("rid-1", "chat.completion", 7, "m")
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello",
                                                         "reasoning_content": None, "tool_calls": None},
                                "logprobs": None, "finish_reason": "stop", "matched_stop": 2}]
    assert body["usage"] == USAGE


def test_tool_calls_reasoning_logprobs_and_several_choices_are_merged() -> None:
    a = OpenAIAssembler(chat=True)
    a.feed(chunk([{"index": 1, "delta": {"reasoning_content": "think "}, "logprobs": {"content": [{"t": 1}]}},
                  {"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                                         "function": {"name": "search", "arguments": "{\"q\""}}]}}]))
    a.feed(chunk([{"index": 1, "delta": {"reasoning_content": "more", "content": "x"},
                   "logprobs": {"content": [{"t": 2}]}, "finish_reason": "length"},
                  {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]},
                   "finish_reason": "tool_calls"}]))
    first, second = a.build()["choices"]
    assert first["message"]["tool_calls"] == [{"id": "call_1", "type": "function",
                                               "function": {"name": "search", "arguments": "{\"q\": 1}"}}]
    assert first["message"]["content"] is None and first["finish_reason"] == "tool_calls"
    assert "matched_stop" not in first  # only what the upstream reports
    assert second["message"]["reasoning_content"] == "think more" and second["message"]["content"] == "x"
    assert second["logprobs"] == {"content": [{"t": 1}, {"t": 2}]}


def test_completion_chunks_become_a_text_completion() -> None:
    a = OpenAIAssembler(chat=False)
    for piece, reason in (("a", None), ("b", "length")):
        a.feed({"id": "r", "object": "text_completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "text": piece, "logprobs": None, "finish_reason": reason}]})
    body = a.build()
    assert body["object"] == "text_completion"
    assert body["choices"] == [{"index": 0, "text": "ab", "logprobs": None, "finish_reason": "length"}]
    assert body["usage"] is None


def test_generate_takes_the_cumulative_last_event_or_joins_incremental_ones() -> None:
    cumulative = GenerateAssembler()
    for k in (1, 2, 3):
        cumulative.feed({"text": "abc"[:k], "output_ids": [1, 2, 3][:k], "meta_info": {"completion_tokens": k}})
    assert cumulative.build() == {"text": "abc", "output_ids": [1, 2, 3], "meta_info": {"completion_tokens": 3}}
    incremental = GenerateAssembler()
    for k in (1, 2, 3):
        incremental.feed({"text": "abc"[k - 1], "output_ids": [k], "meta_info": {"completion_tokens": k}})
    assert incremental.build()["text"] == "abc" and incremental.build()["output_ids"] == [1, 2, 3]


@pytest.mark.parametrize(("route", "body", "expected"), [
    ("chat", {"messages": []}, True),
    ("completions", {"prompt": "x"}, True),
    ("completions", {"prompt": ["a", "b"]}, False),
    ("completions", {"prompt": "x", "echo": True}, False),
    ("generate", {"text": "x"}, True),
    ("generate", {"text": ["a", "b"]}, False),
    ("generate", {"input_ids": [[1], [2]]}, False),
    ("generate", {"text": "x", "sampling_params": {"n": 2}}, False),
])
def test_which_requests_are_served_from_a_stream(route: str, body: dict[str, Any], expected: bool) -> None:
    assert can_assemble(route, body) is expected
