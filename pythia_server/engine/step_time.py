"""How long one scheduler step of SGLang takes, from a calibration table.

Tables (``pythia_server/data/aic_*.json``) hold kernel times predicted by NVIDIA's
aiconfigurator for SGLang on one H100 SXM: ``prefill_ms[input_len][batch]``,
``decode_ms[context_len][batch]`` and ``prefill_prefix_ms[cached]`` (an 8,192-token
prompt with ``cached`` tokens already in cache). Interpolation is piecewise linear in
each axis (bilinear in two): decode cost is affine in batch size and context (weights
read once, KV read per token of context), and prefill is close to linear in tokens, so
linear interpolation is exact at the grid and tight between it; beyond the grid the last
segment is extended.

A prefill batch costs a part linear in its new tokens plus attention within each
request: ``lin(sum e) + c * sum e^2``, where ``lin(L) = T1(L) - c L^2`` interpolates the
batch-1 column ``T1`` with its attention removed (so it can be extended linearly past
the grid) and ``c`` is fitted (least squares) to the table's batch > 1 columns; for
Llama-3.1-8B c is about 4e-7 ms and the formula lands within 1% of the batch entries. Cached prefix tokens are not recomputed but the new
tokens attend over them: ``+ k * e * prefix`` per request, ``k`` fitted to
``prefill_prefix_ms`` against ``prefill_ms`` of the uncached remainder (about 8e-7 ms,
i.e. 2c as causal attention predicts; 4,096 new tokens over a 4,096-token prefix cost
~14 ms extra).

A mixed step (chunked prefill plus decode, SGLang's ``--enable-mixed-chunk``) runs as one
forward pass where each decoding request contributes one extend token: time = prefill of
(chunk tokens + decode batch) plus the decode batch's attention over its context, taken
as ``decode_ms(batch, ctx) - decode_ms(1, 512)`` (the part of a decode step above the
fixed weight-read cost, which the prefill pass already pays).

A per-step scheduler overhead is added to every step (default 1.0 ms): SGLang's overlap
scheduler hides most CPU work behind the GPU, and what remains (batch assembly, sampling
bookkeeping, detokenizer IPC) is on the order of a millisecond per step for an 8B model;
aiconfigurator's tables are kernel sums and exclude it.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = ["DEFAULT_CALIBRATION", "StepTimeModel"]

DEFAULT_CALIBRATION = "Meta-Llama-3.1-8B"
_PREFIX_TABLE_PROMPT = 8192  # prefill_prefix_ms is measured on a prompt of this many tokens


def _interp(xs: Sequence[float], ys: Sequence[float], x: float) -> float:
    """Piecewise-linear through (xs, ys), extended linearly past both ends."""
    if len(xs) == 1:
        return ys[0]
    i = bisect.bisect_right(xs, x) - 1
    i = min(max(i, 0), len(xs) - 2)
    x0, x1 = xs[i], xs[i + 1]
    return ys[i] + (ys[i + 1] - ys[i]) * (x - x0) / (x1 - x0)


def _grid(table: dict[str, dict[str, float]]) -> tuple[list[float], list[float], list[list[float]]]:
    rows = sorted(table, key=float)
    cols = sorted({c for r in rows for c in table[r]}, key=float)
    values = [[float(table[r][c]) for c in cols] for r in rows]
    return [float(r) for r in rows], [float(c) for c in cols], values


@dataclass(frozen=True, slots=True)
class _Bilinear:
    rows: list[float]
    cols: list[float]
    values: list[list[float]]

    def __call__(self, row: float, col: float) -> float:
        per_row = [_interp(self.cols, line, col) for line in self.values]
        return _interp(self.rows, per_row, row)


class StepTimeModel:
    """Step durations in seconds for prefill, decode and mixed batches."""

    def __init__(self, table: dict, overhead_ms: float = 1.0, name: str = "") -> None:
        self.name = name or str(table.get("model", "custom"))
        self.overhead_ms = overhead_ms
        self._decode = _Bilinear(*_grid(table["decode_ms"]))
        self._decode_rows: dict[int, list[float]] = {}
        rows, cols, values = _grid(table["prefill_ms"])
        single = cols.index(1.0) if 1.0 in cols else 0
        self._prefill_rows = rows
        self._prefill_single = [line[single] for line in values]
        self.cross_coef_ms = self._fit_cross_coef(rows, cols, values)
        # batch-1 time minus its attention term: linear in tokens, so safe to extend past the grid
        self._linear_part = [ms - self.cross_coef_ms * r * r for r, ms in zip(rows, self._prefill_single, strict=True)]
        self.prefix_coef_ms = self._fit_prefix_coef(table.get("prefill_prefix_ms", {}))

    @classmethod
    def load(cls, name_or_path: str = DEFAULT_CALIBRATION, overhead_ms: float = 1.0) -> StepTimeModel:
        """By model name (``Meta-Llama-3.1-8B``, ``Qwen3-8B``) or by path to a JSON table."""
        path = Path(name_or_path)
        if path.suffix == ".json" and path.exists():
            return cls(json.loads(path.read_text()), overhead_ms, path.stem)
        short = name_or_path.rsplit("/", 1)[-1].removeprefix("aic_").removesuffix(".json")
        data = resources.files("pythia_server.data").joinpath(f"aic_{short}.json")
        if not data.is_file():
            available = sorted(
                p.name.removeprefix("aic_").removesuffix(".json")
                for p in resources.files("pythia_server.data").iterdir()
                if p.name.startswith("aic_")
            )
            raise ValueError(f"no calibration table {name_or_path!r}; available: {', '.join(available)}")
        return cls(json.loads(data.read_text()), overhead_ms, short)

    def _single_ms(self, tokens: float) -> float:
        return _interp(self._prefill_rows, self._prefill_single, tokens)

    def _fit_cross_coef(self, rows: list[float], cols: list[float], values: list[list[float]]) -> float:
        num = den = 0.0
        for r, line in zip(rows, values, strict=True):
            for c, ms in zip(cols, line, strict=True):
                total = r * c
                if c <= 1 or total > rows[-1]:
                    continue
                saved = self._single_ms(total) - ms
                x = total * total - c * r * r
                num += saved * x
                den += x * x
        return max(num / den, 0.0) if den else 0.0

    def _fit_prefix_coef(self, prefix_table: dict[str, float]) -> float:
        num = den = 0.0
        for cached_s, ms in prefix_table.items():
            cached = float(cached_s)
            new = _PREFIX_TABLE_PROMPT - cached
            if cached <= 0 or new <= 0:
                continue
            extra = float(ms) - self._single_ms(new)
            x = new * cached
            num += extra * x
            den += x * x
        return max(num / den, 0.0) if den else 0.0

    # ------------------------------------------------------------- kernel times (ms)
    def prefill_kernel_ms(self, extend_lens: Sequence[int], prefix_lens: Sequence[int]) -> float:
        """One prefill pass over requests with these new-token and cached-prefix lengths."""
        if not extend_lens:
            return 0.0
        total = sum(extend_lens)
        squares = sum(e * e for e in extend_lens)
        base = _interp(self._prefill_rows, self._linear_part, total) + self.cross_coef_ms * squares
        prefix = self.prefix_coef_ms * sum(e * p for e, p in zip(extend_lens, prefix_lens, strict=True))
        return max(base, self._prefill_single[0] * 0.5) + prefix

    def decode_kernel_ms(self, batch_size: int, mean_context: float) -> float:
        if batch_size <= 0:
            return 0.0
        per_row = self._decode_rows.get(batch_size)
        if per_row is None:  # the batch-size axis interpolated once per size, then only context
            per_row = [_interp(self._decode.cols, line, batch_size) for line in self._decode.values]
            self._decode_rows[batch_size] = per_row
        return max(_interp(self._decode.rows, per_row, mean_context), 0.0)

    # ------------------------------------------------------------- step times (s)
    def prefill_s(self, extend_lens: Sequence[int], prefix_lens: Sequence[int]) -> float:
        return (self.prefill_kernel_ms(extend_lens, prefix_lens) + self.overhead_ms) / 1000.0

    def decode_s(self, batch_size: int, mean_context: float) -> float:
        return (self.decode_kernel_ms(batch_size, mean_context) + self.overhead_ms) / 1000.0

    def mixed_s(
        self,
        extend_lens: Sequence[int],
        prefix_lens: Sequence[int],
        decode_batch: int,
        decode_mean_context: float,
    ) -> float:
        extends = [*extend_lens, *([1] * decode_batch)]
        prefixes = [*prefix_lens, *([0] * decode_batch)]
        attention = 0.0
        if decode_batch:
            attention = max(self.decode_kernel_ms(decode_batch, decode_mean_context) - self.decode_kernel_ms(1, 512), 0.0)
        return (self.prefill_kernel_ms(extends, prefixes) + attention + self.overhead_ms) / 1000.0
