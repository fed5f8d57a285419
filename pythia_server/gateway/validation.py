"""Reading and checking request bodies: the fields the gateway relies on, nothing more.

Other fields pass through to the replica untouched (it validates its own schema). A
violation raises :class:`InvalidRequestError` naming the ``param``; an oversized body
raises :class:`PayloadTooLargeError` as soon as the limit is crossed while reading.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request

from pythia_server.errors import InvalidRequestError, PayloadTooLargeError
from pythia_server.gateway.prompt_tokens import PromptTokenizer
from pythia_server.tokens import apply_chat_template, tokenize

__all__ = ["ParsedRequest", "parse_body", "prompt_token_ids", "read_body", "validate"]

ROUTES = ("chat", "completions", "generate")


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """A checked request body and what the gateway reads from it."""

    route: str  # "chat", "completions" or "generate"
    body: dict[str, Any]
    model: str | None
    stream: bool
    client_wants_usage: bool  # stream_options.include_usage as the client sent it
    max_tokens: int | None


async def read_body(request: Request, limit_bytes: int) -> bytes:
    """The raw body, refused with 413 once it exceeds ``limit_bytes``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit_bytes:
        raise PayloadTooLargeError(f"request body of {declared} bytes exceeds the limit of {limit_bytes} bytes")
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit_bytes:
                raise PayloadTooLargeError(f"request body exceeds the limit of {limit_bytes} bytes")
            parts.append(chunk)
    except ClientDisconnect as exc:
        raise InvalidRequestError("the client disconnected while sending the body") from exc
    return b"".join(parts)


def parse_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise InvalidRequestError("the request body is empty; expected a JSON object")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    return body


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _optional_bool(body: Mapping[str, Any], key: str) -> bool:
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequestError(f"'{key}' must be a boolean, got {_type_name(value)}", param=key)
    return value


def _optional_count(body: Mapping[str, Any], key: str, param: str | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidRequestError(f"'{param or key}' must be a non-negative integer", param=param or key)
    return value


def _required_model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise InvalidRequestError("'model' is required", param="model", code="missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError(f"'model' must be a non-empty string, got {_type_name(model)}", param="model")
    return model


def _check_messages(body: Mapping[str, Any]) -> None:
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequestError("'messages' is required", param="messages", code="missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("'messages' must be a non-empty array", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequestError(f"'messages[{i}]' must be an object", param=f"messages[{i}]")
        if not isinstance(message.get("role"), str):
            raise InvalidRequestError(f"'messages[{i}].role' must be a string", param=f"messages[{i}].role")
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise InvalidRequestError(f"'messages[{i}].content' must be a string or an array",
                                      param=f"messages[{i}].content")


def _is_token_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)


def _check_prompt(body: Mapping[str, Any]) -> None:
    prompt = body.get("prompt")
    if prompt is None:
        raise InvalidRequestError("'prompt' is required", param="prompt", code="missing_required_parameter")
    if isinstance(prompt, str) or _is_token_list(prompt):
        return
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) or _is_token_list(p) for p in prompt):
        return
    raise InvalidRequestError("'prompt' must be a string, an array of strings or an array of token ids",
                              param="prompt")


def _check_generate(body: Mapping[str, Any]) -> int | None:
    text, ids = body.get("text"), body.get("input_ids")
    if text is None and ids is None:
        raise InvalidRequestError("one of 'text' or 'input_ids' is required", param="text",
                                  code="missing_required_parameter")
    if text is not None and not (isinstance(text, str) or (isinstance(text, list) and
                                                           all(isinstance(t, str) for t in text))):
        raise InvalidRequestError("'text' must be a string or an array of strings", param="text")
    if ids is not None and not (_is_token_list(ids) or (isinstance(ids, list) and
                                                        all(_is_token_list(i) for i in ids))):
        raise InvalidRequestError("'input_ids' must be an array of token ids", param="input_ids")
    params = body.get("sampling_params")
    if params is None:
        return None
    if not isinstance(params, dict):
        raise InvalidRequestError("'sampling_params' must be an object", param="sampling_params")
    return _optional_count(params, "max_new_tokens", "sampling_params.max_new_tokens")


def validate(route: str, body: dict[str, Any]) -> ParsedRequest:
    """Check the fields the gateway relies on for ``route``."""
    stream = _optional_bool(body, "stream")
    if route == "generate":
        max_tokens = _check_generate(body)
        model = body.get("model") if isinstance(body.get("model"), str) else None
        return ParsedRequest(route, body, model, stream, False, max_tokens)
    model = _required_model(body)
    if route == "chat":
        _check_messages(body)
        max_tokens = _optional_count(body, "max_completion_tokens")
        if max_tokens is None:
            max_tokens = _optional_count(body, "max_tokens")
    else:
        _check_prompt(body)
        max_tokens = _optional_count(body, "max_tokens")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequestError("'stream_options' must be an object", param="stream_options")
    wants_usage = bool(options and options.get("include_usage") is True)
    return ParsedRequest(route, body, model, stream, wants_usage, max_tokens)


def _first(values: Sequence[Any]) -> Any:
    return values[0] if values else ""


def prompt_token_ids(parsed: ParsedRequest, chat_tokenizer: PromptTokenizer | None = None) -> list[int]:
    """The prompt's token ids as the gateway estimates them (the first prompt of a batch)."""
    body = parsed.body
    if parsed.route == "chat":
        if chat_tokenizer is not None:
            return chat_tokenizer.chat_ids(body["messages"])
        return tokenize(apply_chat_template(body["messages"]))
    if parsed.route == "completions":
        prompt = body["prompt"]
    else:
        prompt = body.get("input_ids")
        if prompt is None:
            prompt = body.get("text")
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        prompt = _first(prompt)
    if isinstance(prompt, list):
        return list(prompt)
    return tokenize(prompt)
