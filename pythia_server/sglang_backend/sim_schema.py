"""SGLang 0.5's request and response shapes, as the simulated server reads and writes them.

Request parsing mirrors SGLang's models: ``managers/io_struct.py`` (``GenerateReqInput``),
``sampling/sampling_params.py`` (``SamplingParams``: unknown keys are an error, default
``max_new_tokens`` 128) and ``entrypoints/openai/protocol.py`` (``ChatCompletionRequest``,
``CompletionRequest``: unknown top-level fields are ignored; SGLang's extras ``rid``,
``priority``, ``ignore_eos``, ``session_params``, ``stop_token_ids`` accepted). Any bad
field raises :class:`BadRequest`, which the server renders as a 400 with an OpenAI-style
error body. Each parse returns the engine's ``GenerateRequest`` plus what the response
needs (stream flag, model name echoed as given: SGLang does not check it).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pythia_server.engine.types import FinishedRequest, GenerateRequest
from pythia_server.tokens import apply_chat_template, tokenize

__all__ = ["BadRequest", "ParsedRequest", "error_body", "parse_chat", "parse_completion", "parse_generate"]

# sampling/sampling_params.py SamplingParams.__init__ keyword arguments
SAMPLING_PARAM_KEYS = frozenset({
    "max_new_tokens", "stop", "stop_token_ids", "stop_regex", "temperature", "top_p", "top_k", "min_p",
    "frequency_penalty", "presence_penalty", "repetition_penalty", "min_new_tokens", "n", "json_schema",
    "regex", "ebnf", "structural_tag", "ignore_eos", "skip_special_tokens", "spaces_between_special_tokens",
    "no_stop_trim", "custom_params", "stream_interval", "logit_bias", "sampling_seed",
})
DEFAULT_GENERATE_MAX_NEW_TOKENS = 128
DEFAULT_COMPLETION_MAX_TOKENS = 16


class BadRequest(ValueError):
    """Client error; ``param`` names the offending field when there is one."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.param = param
        self.status = status


def error_body(message: str, param: str | None = None, status: int = 400, kind: str = "") -> dict[str, Any]:
    """OpenAI's error shape, which SGLang's OpenAI routes also use."""
    default_kind = "invalid_request_error" if status < 500 else "internal_error"
    return {"error": {"message": message, "type": kind or default_kind, "param": param, "code": status}}


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    request: GenerateRequest
    stream: bool
    model: str
    include_usage: bool = False
    input_text: str | None = None


def _as_int(body: Mapping[str, Any], key: str, default: int | None, minimum: int = 0, where: str = "") -> int | None:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{where}{key} must be an integer", where + key)
    if value < minimum:
        raise BadRequest(f"{where}{key} must be at least {minimum}", where + key)
    return value


def _as_bool(body: Mapping[str, Any], key: str, default: bool, where: str = "") -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequest(f"{where}{key} must be a boolean", where + key)
    return value


def _as_number(body: Mapping[str, Any], key: str, where: str = "") -> None:
    value = body.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise BadRequest(f"{where}{key} must be a number", where + key)


def _stops(value: Any, param: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return tuple(value)
    raise BadRequest(f"{param} must be a string or a list of strings", param)


def _stop_ids(value: Any, param: str) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        return tuple(value)
    raise BadRequest(f"{param} must be a list of integers", param)


def _rid(body: Mapping[str, Any]) -> str:
    rid = body.get("rid")
    if rid is None:
        return uuid.uuid4().hex
    if not isinstance(rid, str) or not rid:
        raise BadRequest("rid must be a non-empty string", "rid")
    return rid


def _session_id(body: Mapping[str, Any]) -> str | None:
    params = body.get("session_params")
    if params is None:
        session = body.get("session_id")
    elif isinstance(params, Mapping):
        session = params.get("id")
    else:
        raise BadRequest("session_params must be an object", "session_params")
    if session is not None and not isinstance(session, str):
        raise BadRequest("session id must be a string", "session_params")
    return session


def _token_ids(value: Any, param: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value):
        raise BadRequest(f"{param} must be a list of non-negative integers", param)
    return value


def _require_object(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise BadRequest("the request body must be a JSON object")
    return body


def parse_generate(raw: Any) -> ParsedRequest:
    """SGLang's native ``/generate`` body (one prompt: ``text`` or ``input_ids``)."""
    body = _require_object(raw)
    text, input_ids = body.get("text"), body.get("input_ids")
    if (text is None) == (input_ids is None):
        raise BadRequest("exactly one of text or input_ids must be given", "text")
    if isinstance(text, list) or (isinstance(input_ids, list) and input_ids and isinstance(input_ids[0], list)):
        raise BadRequest("batched /generate requests are not supported by the simulated engine", "text")
    if text is not None and not isinstance(text, str):
        raise BadRequest("text must be a string", "text")
    ids = tokenize(text) if text is not None else _token_ids(input_ids, "input_ids")
    params = body.get("sampling_params") or {}
    if not isinstance(params, Mapping):
        raise BadRequest("sampling_params must be an object", "sampling_params")
    unknown = sorted(set(params) - SAMPLING_PARAM_KEYS)
    if unknown:
        raise BadRequest(f"unknown sampling parameter(s): {', '.join(unknown)}", "sampling_params")
    where = "sampling_params."
    max_new = _as_int(params, "max_new_tokens", DEFAULT_GENERATE_MAX_NEW_TOKENS, 0, where)
    for key in ("temperature", "top_p", "min_p", "frequency_penalty", "presence_penalty", "repetition_penalty"):
        _as_number(params, key, where)
    if _as_int(params, "n", 1, 1, where) != 1:
        raise BadRequest("n > 1 is not supported by the simulated engine", where + "n")
    request = GenerateRequest(
        rid=_rid(body),
        input_ids=ids,
        max_new_tokens=max_new or 0,
        ignore_eos=_as_bool(params, "ignore_eos", False, where),
        stop=_stops(params.get("stop"), where + "stop"),
        stop_token_ids=_stop_ids(params.get("stop_token_ids"), where + "stop_token_ids"),
        priority=_as_int(body, "priority", None, -(2**31)),
        session_id=_session_id(body),
    )
    return ParsedRequest(request, _as_bool(body, "stream", False), model="", input_text=text)


def _openai_common(body: Mapping[str, Any], ids: list[int], default_max: int | None, context_length: int) -> ParsedRequest:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model is required and must be a string", "model")
    for key in ("temperature", "top_p", "frequency_penalty", "presence_penalty"):
        _as_number(body, key)
    if _as_int(body, "n", 1, 1) != 1:
        raise BadRequest("n > 1 is not supported by the simulated engine", "n")
    max_tokens = _as_int(body, "max_completion_tokens", None, 0)
    if max_tokens is None:
        max_tokens = _as_int(body, "max_tokens", default_max, 0)
    if max_tokens is None:
        max_tokens = max(context_length - len(ids), 0)  # SGLang: the rest of the context
    stream = _as_bool(body, "stream", False)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, Mapping):
        raise BadRequest("stream_options must be an object", "stream_options")
    include_usage = bool(options and options.get("include_usage"))
    request = GenerateRequest(
        rid=_rid(body),
        input_ids=ids,
        max_new_tokens=max_tokens,
        ignore_eos=_as_bool(body, "ignore_eos", False),
        stop=_stops(body.get("stop"), "stop"),
        stop_token_ids=_stop_ids(body.get("stop_token_ids"), "stop_token_ids"),
        priority=_as_int(body, "priority", None, -(2**31)),
        session_id=_session_id(body),
    )
    return ParsedRequest(request, stream, model, include_usage)


def parse_chat(raw: Any, context_length: int) -> ParsedRequest:
    body = _require_object(raw)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a string role", f"messages[{i}]")
    ids = tokenize(apply_chat_template(messages))
    return _openai_common(body, ids, None, context_length)


def parse_completion(raw: Any, context_length: int) -> ParsedRequest:
    body = _require_object(raw)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        ids = tokenize(prompt)
    elif isinstance(prompt, list) and prompt:
        ids = _token_ids(prompt, "prompt")
    else:
        raise BadRequest("prompt must be a non-empty string or list of token ids", "prompt")
    return _openai_common(body, ids, DEFAULT_COMPLETION_MAX_TOKENS, context_length)


# ---------------------------------------------------------------------- responses
def meta_info(rid: str, finished: FinishedRequest | None, prompt_tokens: int, completion_tokens: int,
              cached_tokens: int, e2e_latency_s: float) -> dict[str, Any]:
    """SGLang's ``meta_info`` (tokenizer_manager.py): counts, finish reason, latency."""
    return {
        "id": rid,
        "finish_reason": finished.finish_reason if finished else None,
        "prompt_tokens": prompt_tokens,
        "weight_version": "default",
        "total_retractions": finished.retractions if finished else 0,
        "completion_tokens": completion_tokens,
        "cached_tokens": cached_tokens,
        "e2e_latency": e2e_latency_s,
    }


def openai_finish_reason(finished: FinishedRequest) -> tuple[str | None, Any]:
    """(finish_reason, matched_stop) as SGLang's OpenAI adapter maps them."""
    kind = finished.finish_reason.get("type")
    if kind == "length":
        return "length", None
    if kind == "stop":
        return "stop", finished.finish_reason.get("matched")
    return "abort", None


def usage(finished: FinishedRequest) -> dict[str, Any]:
    return {
        "prompt_tokens": finished.prompt_tokens,
        "completion_tokens": finished.completion_tokens,
        "total_tokens": finished.prompt_tokens + finished.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": finished.cached_tokens},
    }


def now_unix() -> int:
    return int(time.time())
