"""How many tokens the simulated model writes before it stops on its own.

A real model's answer length depends on what it was asked: the same agent role (same
system prompt) writes answers of a similar size in every session. The simulator keys a
log-normal length distribution by the first ``key_tokens`` tokens of the prompt (where
the chat template puts the system / role prompt): the key's hash picks the median,
log-uniform in [``min_median``, ``max_median``], and each request draws from
``lognormal(log median, sigma)`` with the engine's seeded ``random.Random``. With
``ignore_eos`` the model always writes ``max_new_tokens``, as SGLang does.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["OutputLengthModel"]


@dataclass(frozen=True, slots=True)
class OutputLengthModel:
    key_tokens: int = 64
    min_median: int = 48
    max_median: int = 768
    sigma: float = 0.6

    def median_for(self, input_ids: Sequence[int]) -> float:
        key = input_ids[: self.key_tokens]
        digest = zlib.crc32(b"".join(t.to_bytes(4, "little") for t in key))
        u = digest / 0xFFFFFFFF
        lo, hi = math.log(self.min_median), math.log(self.max_median)
        return math.exp(lo + u * (hi - lo))

    def draw(self, input_ids: Sequence[int], max_new_tokens: int, ignore_eos: bool, rng: random.Random) -> int:
        """Tokens to generate; at least 1 unless ``max_new_tokens`` is 0."""
        if max_new_tokens <= 0:
            return 0
        if ignore_eos:
            return max_new_tokens
        natural = rng.lognormvariate(math.log(self.median_for(input_ids)), self.sigma)
        return max(1, min(max_new_tokens, round(natural)))
