"""Deterministic, download-free tokenisation shared by the gateway and the simulated engine.

Real tokenisers need vocabularies fetched at run time; the simulator only needs token
*counts* and *identities* that behave like BPE: stable across processes, about four
characters per token for English, identical prefixes giving identical leading tokens.
The gateway uses the same functions to count prompt tokens and hash prefix blocks, so
its view of a prompt matches the simulated engine's exactly (on a real SGLang the counts
are an estimate; the engine's own ``prompt_tokens`` is what gets recorded).
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "VOCAB_SIZE",
    "apply_chat_template",
    "block_hashes",
    "count_tokens",
    "synthetic_text",
    "tokenize",
]

VOCAB_SIZE = 128_256  # Llama-3's vocabulary size
# Newline runs are pieces of their own and a word takes at most one leading space (as in
# Llama-3's pre-tokenizer), so text appended after a chat template's "\n\n" tokenizes the
# same whether or not it is followed by more text: a reply cached by the engine matches
# the next turn's prompt.
_PIECE_RE = re.compile(r"<\|[a-z_]+\|>|[\r\n]+|[^\S\r\n]?[A-Za-z]+|[^\S\r\n]?\d{1,3}|[^\S\r\n]?[^\sA-Za-z\d]|[^\S\r\n]+")
_MAX_PIECE = 4  # long words split into pieces of this many characters, as BPE roughly does
_BLOCK_SEED = 0x9E3779B9


def tokenize(text: str) -> list[int]:
    """Token ids for ``text``; deterministic, roughly BPE-sized (~4 characters a token)."""
    ids: list[int] = []
    append = ids.append
    for match in _PIECE_RE.finditer(text):
        piece = match.group()
        if len(piece) <= _MAX_PIECE + 1 or piece.startswith("<|"):
            append(zlib.crc32(piece.encode()) % VOCAB_SIZE)
            continue
        for start in range(0, len(piece), _MAX_PIECE):
            append(zlib.crc32(piece[start : start + _MAX_PIECE].encode()) % VOCAB_SIZE)
    return ids


def count_tokens(text: str) -> int:
    return len(tokenize(text))


def block_hashes(
    token_ids: Sequence[int], block_size: int, parent_hash: int | None = None
) -> list[int]:
    """Chained 64-bit hashes of each *full* ``block_size`` block of ``token_ids``.

    Block i's hash covers blocks 0..i, so equal hashes mean equal prefixes (as in
    SGLang's KV events and Dynamo's router). A trailing partial block is not hashed.
    ``parent_hash`` continues a chain: the hash of the block just before ``token_ids``
    (the radix cache hashes only a node's new pages this way).
    """
    if block_size <= 0:
        raise ValueError("block_size must be positive")
    out: list[int] = []
    parent = _BLOCK_SEED if parent_hash is None else parent_hash
    for end in range(block_size, len(token_ids) + 1, block_size):
        block = token_ids[end - block_size : end]
        data = parent.to_bytes(8, "little") + struct.pack(f"<{block_size}I", *block)
        low = zlib.crc32(data)
        high = zlib.adler32(data)
        parent = (high << 32) | low
        out.append(parent)
    return out


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Iterable) and not isinstance(content, (bytes, Mapping)):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "".join(parts)
    return str(content)


def apply_chat_template(messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> str:
    """Render OpenAI chat messages in Llama-3's chat format (the calibrated model's).

    Tool calls and tool results are rendered as text so they count and cache like the
    real template would.
    """
    out = ["<|begin_of_text|>"]
    for message in messages:
        role = str(message.get("role", "user"))
        text = _content_text(message.get("content"))
        for call in message.get("tool_calls") or ():
            if isinstance(call, Mapping):
                fn = call.get("function") or {}
                if isinstance(fn, Mapping):
                    text += f"<|python_tag|>{fn.get('name', '')}({fn.get('arguments', '')})"
        if role == "tool":
            role = "ipython"
        out.append(f"<|start_header_id|>{role}<|end_header_id|>\n\n{text}<|eot_id|>")
    if add_generation_prompt:
        out.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(out)


# Words of at most four letters: with their leading space each is exactly one token.
_WORDS = (
    "the", "plan", "step", "data", "code", "test", "node", "task", "tool", "list",
    "item", "next", "call", "note", "fact", "idea", "page", "line", "term", "goal",
    "case", "rule", "view", "path", "key", "set", "map", "run", "log", "fix",
)


def synthetic_text(n_tokens: int, seed: int) -> list[str]:
    """``n_tokens`` text pieces, one per output token, reproducible from ``seed``."""
    pieces: list[str] = []
    x = (seed * 2654435761 + 1) & 0xFFFFFFFF
    for i in range(n_tokens):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        word = _WORDS[x % len(_WORDS)]
        pieces.append(word if i == 0 else " " + word)
    return pieces
