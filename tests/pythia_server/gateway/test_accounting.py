from __future__ import annotations

import pytest

from pythia_server.gateway.accounting import (
    SseSplitter,
    Usage,
    carries_accounting,
    decode_event,
    has_content,
    is_usage_only,
    usage_from_generate,
    usage_from_openai,
)


def test_splitter_joins_events_cut_across_chunks_and_normalises_crlf() -> None:
    splitter = SseSplitter()
    assert splitter.feed(b'data: {"a"') == []
    assert splitter.feed(b': 1}\r\n\r\ndata: [DO') == [b'data: {"a": 1}\n\n']
    assert splitter.feed(b"NE]\n\n: comment\n\ndata: {") == [b"data: [DONE]\n\n", b": comment\n\n"]
    assert splitter.rest() == b"data: {" and splitter.rest() == b""


@pytest.mark.parametrize(("event", "data"), [
    (b'data: {"x": 1}\n\n', {"x": 1}), (b'data:{"x":1}\n\n', {"x": 1}), (b"data: [DONE]\n\n", None),
    (b": keep-alive\n\n", None), (b"data: not json\n\n", None), (b"data: {broken\n\n", None),
])
def test_decode_event(event: bytes, data: object) -> None:
    assert decode_event(event) == data


@pytest.mark.parametrize(("event", "expected"), [
    (b'data: {"choices":[{"delta":{"content":"x"},"finish_reason":null}],"usage":null}\n\n', False),
    (b'data: {"choices": [{"finish_reason": null}], "usage": null}\n\n', False),
    (b'data: {"choices":[{"finish_reason":"stop"}]}\n\n', True),
    (b'data: {"choices": [], "usage": {"prompt_tokens": 3}}\n\n', True),
])
def test_only_chunks_with_usage_or_a_finish_reason_need_decoding(event: bytes, expected: bool) -> None:
    assert carries_accounting(event) is expected


def test_usage_and_content_readers() -> None:
    usage = Usage()
    usage_from_openai({"choices": [{"finish_reason": "stop"}], "usage": {
        "prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 8}}}, usage)
    assert (usage.prompt_tokens, usage.output_tokens, usage.cached_tokens, usage.finish_reason) == (10, 2, 8, "stop")
    usage = Usage()
    usage_from_generate([{"text": "x", "meta_info": {"prompt_tokens": 5, "completion_tokens": 1, "cached_tokens": 0,
                                                     "finish_reason": {"type": "length"}, "queue_time": 0.25}}], usage)
    assert (usage.prompt_tokens, usage.finish_reason, usage.engine_queue_ms) == (5, "length", 250.0)
    assert has_content("chat", {"choices": [{"delta": {"content": "hi"}}]})
    assert not has_content("chat", {"choices": [{"delta": {"role": "assistant", "content": ""}}]})
    assert has_content("completions", {"choices": [{"text": "a"}]})
    assert has_content("generate", {"text": "", "meta_info": {"completion_tokens": 1}})
    assert is_usage_only({"choices": [], "usage": {"prompt_tokens": 1}})
    assert not is_usage_only({"choices": [{}], "usage": {"prompt_tokens": 1}})
