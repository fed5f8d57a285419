"""Whole responses assembled from upstream streams, so non-streaming calls get a TTFT too.

A non-streaming answer arrives whole, so the moment its first token was generated is
invisible. The proxy therefore asks the replica for a stream anyway and builds the
non-streaming body the client asked for from the chunks, in the shape the replica
would have answered (SGLang's, which is OpenAI's): ``id``, ``object``, ``created``,
``model``, ``choices[].message`` (or ``text``), ``logprobs``, ``finish_reason``,
``usage`` with ``prompt_tokens_details.cached_tokens``.

Pure: fed decoded SSE events (JSON dicts), returns a dict. :func:`can_assemble` says
which requests are converted (batched ``/generate`` and a few rare shapes are not).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["GenerateAssembler", "OpenAIAssembler", "can_assemble", "streaming_body"]

#: Top-level chunk keys that are rebuilt rather than copied.
_REBUILT = ("object", "choices", "usage")


def can_assemble(route: str, body: Mapping[str, Any]) -> bool:
    """True when a non-streaming request of ``route`` may be served from an upstream stream.

    Not converted: batched ``/generate`` (a list of prompts, or ``n`` > 1 samples, whose
    streams interleave), ``/generate`` asking for hidden states or embeddings-like extras
    that only the whole answer carries, and completions with ``echo`` (the prompt is not
    streamed back by every engine).
    """
    if route == "generate":
        text, ids = body.get("text"), body.get("input_ids")
        if isinstance(text, list) or (isinstance(ids, list) and ids and isinstance(ids[0], list)):
            return False
        params = body.get("sampling_params")
        if isinstance(params, Mapping) and isinstance(params.get("n"), int) and params["n"] > 1:
            return False
        return not body.get("return_hidden_states")
    if route == "completions":
        prompt = body.get("prompt")
        if body.get("echo") or (isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list))
                                and len(prompt) > 1):
            return False
    return route in ("chat", "completions", "generate")


def streaming_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` asking for a stream (the caller adds usage reporting for OpenAI routes)."""
    return {**body, "stream": True}


@dataclass(slots=True)
class _ToolCall:
    id: str | None = None
    type: str | None = None
    name: str | None = None
    arguments: list[str] = field(default_factory=list)

    def feed(self, delta: Mapping[str, Any]) -> None:
        if isinstance(delta.get("id"), str):
            self.id = delta["id"]
        if isinstance(delta.get("type"), str):
            self.type = delta["type"]
        function = delta.get("function")
        if isinstance(function, Mapping):
            if isinstance(function.get("name"), str):
                self.name = function["name"]
            if isinstance(function.get("arguments"), str):
                self.arguments.append(function["arguments"])

    def build(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type or "function",
                "function": {"name": self.name, "arguments": "".join(self.arguments)}}


@dataclass(slots=True)
class _Choice:
    index: int
    role: str | None = None
    content: list[str] | None = None
    reasoning: list[str] | None = None
    tool_calls: dict[int, _ToolCall] = field(default_factory=dict)
    logprobs: dict[str, list[Any]] | None = None
    finish_reason: str | None = None
    matched_stop: Any = None
    has_matched_stop: bool = False

    def feed_logprobs(self, logprobs: Any) -> None:
        if not isinstance(logprobs, Mapping):
            return
        if self.logprobs is None:
            self.logprobs = {}
        for key, value in logprobs.items():
            if isinstance(value, list):
                self.logprobs.setdefault(key, []).extend(value)


def _index(item: Mapping[str, Any], default: int) -> int:
    value = item.get("index")
    return value if isinstance(value, int) else default


def _append(parts: list[str] | None, piece: str) -> list[str]:
    """``parts`` with ``piece`` added in place (None: nothing seen yet)."""
    if parts is None:
        return [piece]
    parts.append(piece)
    return parts


def _text(parts: list[str] | None) -> str | None:
    return None if parts is None else "".join(parts)


class OpenAIAssembler:
    """Builds a ``chat.completion`` or ``text_completion`` body from its stream's chunks."""

    def __init__(self, chat: bool) -> None:
        self._chat = chat
        self._top: dict[str, Any] = {}
        self._choices: dict[int, _Choice] = {}
        self._usage: Any = None

    def feed(self, data: Any) -> None:
        """One decoded stream event (non-dict events, such as ``[DONE]``, are ignored)."""
        if not isinstance(data, Mapping):
            return
        for key, value in data.items():
            if key not in _REBUILT and key not in self._top:
                self._top[key] = value
        if isinstance(data.get("usage"), Mapping):
            self._usage = data["usage"]
        choices = data.get("choices")
        if not isinstance(choices, list):
            return
        for raw in choices:
            if not isinstance(raw, Mapping):
                continue
            index = _index(raw, 0)
            choice = self._choices.get(index)
            if choice is None:
                choice = self._choices[index] = _Choice(index)
            self._feed_choice(choice, raw)

    def _feed_choice(self, choice: _Choice, raw: Mapping[str, Any]) -> None:
        if self._chat:
            delta = raw.get("delta")
            if isinstance(delta, Mapping):
                if isinstance(delta.get("role"), str):
                    choice.role = delta["role"]
                if isinstance(delta.get("content"), str):
                    choice.content = _append(choice.content, delta["content"])
                if isinstance(delta.get("reasoning_content"), str):
                    choice.reasoning = _append(choice.reasoning, delta["reasoning_content"])
                for call in delta.get("tool_calls") or ():
                    if isinstance(call, Mapping):
                        at = _index(call, len(choice.tool_calls))
                        choice.tool_calls.setdefault(at, _ToolCall()).feed(call)
        elif isinstance(raw.get("text"), str):
            choice.content = _append(choice.content, raw["text"])
        choice.feed_logprobs(raw.get("logprobs"))
        if isinstance(raw.get("finish_reason"), str):
            choice.finish_reason = raw["finish_reason"]
        if "matched_stop" in raw:
            choice.has_matched_stop = True
            if raw["matched_stop"] is not None:
                choice.matched_stop = raw["matched_stop"]

    def build(self) -> dict[str, Any]:
        """The whole response, keys in OpenAI's order."""
        choices = []
        for index in sorted(self._choices):
            c = self._choices[index]
            out: dict[str, Any] = {"index": index}
            if self._chat:
                tools = [c.tool_calls[i].build() for i in sorted(c.tool_calls)] or None
                out["message"] = {"role": c.role or "assistant", "content": _text(c.content),
                                  "reasoning_content": _text(c.reasoning), "tool_calls": tools}
            else:
                out["text"] = _text(c.content) or ""
            out["logprobs"] = c.logprobs
            out["finish_reason"] = c.finish_reason
            if c.has_matched_stop:
                out["matched_stop"] = c.matched_stop
            choices.append(out)
        top = dict(self._top)
        body: dict[str, Any] = {"id": top.pop("id", None),
                                "object": "chat.completion" if self._chat else "text_completion",
                                "created": top.pop("created", None), "model": top.pop("model", None),
                                "choices": choices}
        body.update(top)
        body["usage"] = self._usage
        return body


class GenerateAssembler:
    """Builds SGLang's non-streaming ``/generate`` body from its stream.

    SGLang streams cumulative output by default (each event carries all text so far and
    the final event equals the whole answer); with ``--incremental-streaming-output`` each
    event carries only the new part, which is detected (fewer ``output_ids`` than
    ``meta_info.completion_tokens``) and concatenated.
    """

    def __init__(self) -> None:
        self._last: dict[str, Any] | None = None
        self._texts: list[str] = []
        self._ids: list[Any] = []

    def feed(self, data: Any) -> None:
        if not isinstance(data, Mapping):
            return
        self._last = dict(data)
        if isinstance(data.get("text"), str):
            self._texts.append(data["text"])
        if isinstance(data.get("output_ids"), list):
            self._ids.extend(data["output_ids"])

    def build(self) -> dict[str, Any]:
        if self._last is None:
            return {"text": "", "meta_info": {}}
        body = dict(self._last)
        meta = body.get("meta_info")
        tokens = meta.get("completion_tokens") if isinstance(meta, Mapping) else None
        ids = body.get("output_ids")
        if isinstance(ids, list) and isinstance(tokens, int) and len(ids) < tokens <= len(self._ids):
            body["text"] = "".join(self._texts)
            body["output_ids"] = list(self._ids)
        return body
