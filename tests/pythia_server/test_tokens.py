from __future__ import annotations

from pythia_server.tokens import apply_chat_template, block_hashes, count_tokens, synthetic_text, tokenize


def test_tokenize_is_deterministic_and_bpe_sized() -> None:
    text = "The planner splits the question into focused sub-questions for the researchers. " * 20
    assert tokenize(text) == tokenize(text)
    chars_per_token = len(text) / count_tokens(text)
    assert 3.0 <= chars_per_token <= 6.0


def test_common_prefix_gives_common_leading_blocks() -> None:
    system = "You are a careful reviewer of research reports. " * 30
    a = tokenize(apply_chat_template([{"role": "system", "content": system}, {"role": "user", "content": "first question " * 20}]))
    b = tokenize(apply_chat_template([{"role": "system", "content": system}, {"role": "user", "content": "other request " * 20}]))
    ha, hb = block_hashes(a, 16), block_hashes(b, 16)
    shared = next((i for i, (x, y) in enumerate(zip(ha, hb)) if x != y), len(ha))
    assert shared >= (len(tokenize(system)) // 16) - 1
    assert ha[-1] != hb[-1]


def test_block_hashes_are_chained_and_ignore_partial_blocks() -> None:
    tokens = list(range(40))
    hashes = block_hashes(tokens, 16)
    assert len(hashes) == 2
    other = block_hashes([99] + tokens[1:], 16)
    assert other[0] != hashes[0] and other[1] != hashes[1]  # a change early changes every later hash


def test_synthetic_text_counts_one_token_per_piece() -> None:
    pieces = synthetic_text(50, seed=3)
    assert len(pieces) == 50
    assert count_tokens("".join(pieces)) == 50
    assert synthetic_text(50, seed=3) == pieces
