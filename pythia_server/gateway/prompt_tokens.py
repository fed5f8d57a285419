"""Prompt token ids for chat calls, memoised per message: agents resend the same messages.

A role prompt recurs in every call of its agent and a session's history in every later
call of that session, so tokenising each rendered message once turns the gateway's
per-call tokenisation cost into the cost of the *new* messages only (tokenising a
9k-token prompt from scratch takes about 14 ms here).

It relies on Llama-3's chat template rendering each message on its own, starting with a
special token, so the tokens of the whole prompt are the tokens of its parts in order;
tests/pythia_server/gateway/test_prompt_tokens.py checks that against
``tokenize(apply_chat_template(messages))``.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from pythia_server.tokens import apply_chat_template, tokenize

__all__ = ["PromptTokenizer"]

_BOS = apply_chat_template([], add_generation_prompt=False)
_GENERATION_PROMPT = apply_chat_template([], add_generation_prompt=True)[len(_BOS):]
#: Messages shorter than this are tokenised every time (hashing them costs about as much).
_MIN_CACHED_CHARS = 256


class PromptTokenizer:
    """An LRU of rendered message -> token ids, bounded by the tokens it holds."""

    def __init__(self, max_cached_tokens: int = 2_000_000) -> None:
        self._max_tokens = max_cached_tokens
        self._held_tokens = 0
        self._cache: OrderedDict[str, array[int]] = OrderedDict()
        self._bos = tokenize(_BOS)
        self._generation_prompt = tokenize(_GENERATION_PROMPT)
        self.hits = 0
        self.misses = 0

    def chat_ids(self, messages: Sequence[Mapping[str, Any]]) -> list[int]:
        """The same ids as ``tokenize(apply_chat_template(messages))``."""
        ids = list(self._bos)
        for message in messages:
            ids.extend(self._segment_ids(apply_chat_template([message], add_generation_prompt=False)[len(_BOS):]))
        ids.extend(self._generation_prompt)
        return ids

    def _segment_ids(self, text: str) -> Sequence[int]:
        if len(text) < _MIN_CACHED_CHARS:
            return tokenize(text)
        cached = self._cache.get(text)
        if cached is not None:
            self._cache.move_to_end(text)
            self.hits += 1
            return cached
        self.misses += 1
        ids = array("I", tokenize(text))
        if len(ids) <= self._max_tokens // 4:  # one huge message must not flush everything
            self._cache[text] = ids
            self._held_tokens += len(ids)
            while self._held_tokens > self._max_tokens:
                _, evicted = self._cache.popitem(last=False)
                self._held_tokens -= len(evicted)
        return ids
