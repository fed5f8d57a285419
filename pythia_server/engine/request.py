"""A request's life inside the engine: its planned output and its KV progress.

The output is planned at admission (length from the output-length model, text from
``tokens.synthetic_text``, one token per piece so text and counts agree); the scheduler
then only moves counters. Stop strings and stop token ids cut the plan where the text
first contains them (SGLang trims the matched stop string from the returned text).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from pythia_server.engine.radix_cache import TreeNode
from pythia_server.engine.types import (
    EngineConfig,
    EngineError,
    FinishedRequest,
    GenerateRequest,
)
from pythia_server.tokens import synthetic_text, tokenize

__all__ = ["Req", "check_request", "effective_priority"]

_PIECE_IDS: dict[str, int] = {}
_UNIQUE_ID_BASE = 1 << 40  # above any vocabulary: text-less outputs never match a prompt
_FILLER: list[int] = []
_LEAST_URGENT = 2**62


def check_request(request: GenerateRequest, config: EngineConfig) -> None:
    """Raise EngineError for a request SGLang would reject at submission."""
    if not request.input_ids:
        raise EngineError("the prompt is empty")
    if request.max_new_tokens < 0:
        raise EngineError("max_new_tokens must be at least 0")
    if len(request.input_ids) >= config.context_length:
        raise EngineError(
            f"the input ({len(request.input_ids)} tokens) is longer than the model's "
            f"context length ({config.context_length} tokens)"
        )
    if len(request.input_ids) + 1 > config.max_total_num_tokens:
        raise EngineError(
            f"the input ({len(request.input_ids)} tokens) does not fit in the KV cache "
            f"({config.max_total_num_tokens} tokens)"
        )


def effective_priority(priority: int | None, config: EngineConfig) -> int:
    """The priority the scheduler sorts by; scheduler.py: a request without one is the least urgent."""
    if priority is None:
        return _LEAST_URGENT if config.schedule_low_priority_values_first else -_LEAST_URGENT
    return priority


def _filler(n: int) -> list[int]:
    """``n`` output ids after the unique first one (one shared list, sliced: no new ints)."""
    if n > len(_FILLER):
        _FILLER.extend(range(len(_FILLER), max(n, 2 * len(_FILLER))))
    return _FILLER[:n]


def _piece_id(piece: str) -> int:
    token = _PIECE_IDS.get(piece)
    if token is None:
        token = _PIECE_IDS[piece] = tokenize(piece)[0]
    return token


@dataclass(eq=False, slots=True)
class Req:
    rid: str
    input_ids: list[int]
    max_new_tokens: int
    priority: int
    session_id: str | None
    owner: Hashable | None
    arrival_s: float
    seq: int
    target_len: int  # tokens the request will produce
    output_ids: list[int]
    pieces: list[str]
    finish_reason: dict[str, Any]
    # progress
    out: int = 0  # output tokens emitted so far
    fill_len: int = 0  # tokens to prefill this admission: prompt plus outputs kept across a retraction
    prefilled: int = 0  # tokens of the fill whose KV is computed (cached prefix included)
    locked_len: int = 0  # leading tokens held in the tree under last_node's lock
    private: int = 0  # KV tokens owned outside the tree
    cached_tokens: int = 0
    first_prefill_done: bool = False
    first_token_s: float | None = None
    retractions: int = 0
    batch_token: int = 0  # non-zero while in the running batch (engine/batch.py)
    last_node: TreeNode = field(default=None)  # type: ignore[assignment]

    @classmethod
    def plan(
        cls,
        request: GenerateRequest,
        target: int,
        now_s: float,
        seq: int,
        seed: int,
        eos_token_id: int,
        text: bool = True,
        priority: int = 0,
    ) -> Req:
        """``text`` False (offline replay): no text, and output ids unique to this request."""
        finish: dict[str, Any]
        if target < request.max_new_tokens:
            finish = {"type": "stop", "matched": eos_token_id}
        else:
            finish = {"type": "length", "length": request.max_new_tokens}
        if text:
            pieces = synthetic_text(target, seed * 1_000_003 + seq)
            output_ids = [_piece_id(p) for p in pieces]
        else:
            pieces = []
            # a unique first id makes the whole output unique in the radix tree; the rest is shared
            output_ids = [_UNIQUE_ID_BASE + seq, *_filler(target - 1)] if target else []
        cut = _stop_cut(pieces, output_ids, request.stop, request.stop_token_ids) if text else None
        if cut is not None:
            index, trimmed, matched = cut
            pieces = pieces[: index + 1]
            pieces[index] = trimmed
            output_ids = output_ids[: index + 1]
            finish = {"type": "stop", "matched": matched}
            target = index + 1
        return cls(
            rid=request.rid,
            input_ids=request.input_ids,  # owned by the engine from here: not copied
            max_new_tokens=request.max_new_tokens,
            priority=priority,
            session_id=request.session_id,
            owner=request.owner,
            arrival_s=now_s,
            seq=seq,
            target_len=target,
            output_ids=output_ids,
            pieces=pieces,
            finish_reason=finish,
            fill_len=len(request.input_ids),
        )

    def fill_ids(self) -> list[int]:
        return self.input_ids + self.output_ids[: self.out] if self.out else self.input_ids

    def kv_slice(self, start: int, end: int) -> list[int]:
        """Tokens ``start:end`` of prompt-then-output (what the KV cache holds for this request)."""
        n = len(self.input_ids)
        if end <= n:
            return self.input_ids[start:end]
        if start >= n:
            return self.output_ids[start - n : end - n]
        return self.input_ids[start:] + self.output_ids[: end - n]

    def start_prefill(self, node: TreeNode, prefix_len: int, fill_len: int) -> None:
        self.last_node = node
        self.locked_len = prefix_len
        self.prefilled = prefix_len
        self.fill_len = fill_len
        if not self.first_prefill_done and self.retractions == 0:
            self.cached_tokens = min(prefix_len, len(self.input_ids))

    def retract(self) -> None:
        """Back to the queue; the outputs so far are re-prefilled with the prompt."""
        self.prefilled = 0
        self.fill_len = len(self.input_ids) + self.out
        self.retractions += 1

    def finished(self, at_s: float, reason: dict[str, Any]) -> FinishedRequest:
        return FinishedRequest(
            rid=self.rid,
            prompt_tokens=len(self.input_ids),
            cached_tokens=self.cached_tokens,
            completion_tokens=self.out,
            finish_reason=reason,
            output_ids=self.output_ids[: self.out],
            text="".join(self.pieces[: self.out]),
            arrival_s=self.arrival_s,
            first_token_s=self.first_token_s,
            finish_s=at_s,
            retractions=self.retractions,
        )


def _stop_cut(
    pieces: list[str], ids: list[int], stops: tuple[str, ...], stop_ids: tuple[int, ...]
) -> tuple[int, str, Any] | None:
    """(index of the stopping token, its trimmed text, what matched) or None."""
    if not stops and not stop_ids:
        return None
    stop_id_set = set(stop_ids)
    text = ""
    for index, piece in enumerate(pieces):
        if ids[index] in stop_id_set:
            return index, piece, ids[index]
        before = len(text)
        text += piece
        for stop in stops:
            if not stop:
                continue
            at = text.find(stop, max(0, before - len(stop) + 1))
            if at != -1:
                return index, piece[: max(at - before, 0)], stop
    return None
