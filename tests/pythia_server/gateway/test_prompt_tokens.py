from __future__ import annotations

import pytest

from pythia_server.gateway.prompt_tokens import PromptTokenizer
from pythia_server.tokens import apply_chat_template, tokenize

ROLE = "You are the researcher. Find sources, cite them, and keep notes short. " * 20

CASES = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": ROLE}, {"role": "user", "content": "What is RadixAttention?  "}],
    [{"role": "system", "content": ROLE}, {"role": "user", "content": "q"},
     {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "search", "arguments": "{}"}}]},
     {"role": "tool", "content": "result 12345 <|eot_id|> trailing\n\n"},
     {"role": "user", "content": [{"type": "text", "text": ROLE}, {"type": "text", "text": "more"}]}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "\n\n  x" * 200}],
]


@pytest.mark.parametrize("messages", CASES)
def test_same_ids_as_the_whole_template(messages: list[dict]) -> None:
    tokenizer = PromptTokenizer()
    expected = tokenize(apply_chat_template(messages))
    assert tokenizer.chat_ids(messages) == expected
    assert tokenizer.chat_ids(messages) == expected  # from the cache


def test_recurring_messages_hit_and_the_cache_is_bounded() -> None:
    tokenizer = PromptTokenizer(max_cached_tokens=4000)
    role = {"role": "system", "content": ROLE}
    for i in range(50):
        tokenizer.chat_ids([role, {"role": "user", "content": f"question {i} " * 100}])
    assert tokenizer.hits == 49
    assert tokenizer._held_tokens <= 4000
