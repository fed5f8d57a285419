"""Generate a step-time calibration table with NVIDIA's aiconfigurator-core.

Run (in a separate venv, never in CI: aiconfigurator-core is an optional dependency)::

    python3 -m venv /work/aic-venv
    /work/aic-venv/bin/pip install aiconfigurator-core==0.12.0
    /work/aic-venv/bin/pip install --no-deps -e .
    /work/aic-venv/bin/python benchmarks/make_calibration.py --model Qwen/Qwen3-32B \
        --system h100_sxm --backend-version 0.5.14 --out pythia_server/data/aic_Qwen3-32B.json

The output has exactly the shape of ``pythia_server/data/aic_Meta-Llama-3.1-8B.json``, which
``pythia_server.engine.step_time.StepTimeModel.load`` reads (``--calibration NAME_OR_PATH``):
step latencies in ms, the kernel sums aiconfigurator predicts for SGLang on one GPU of
``--system`` (no per-step scheduler overhead; the engine adds that):

- ``prefill_ms[input_len][batch]``: ``predict_prefill_latency(batch, input_len)``;
- ``decode_ms[context_len][batch]``: ``predict_decode_latency(batch, context_len, 2)``
  (two output tokens = one decode step after the prefill);
- ``prefill_prefix_ms[cached]``: ``predict_prefill_latency(1, 8192, cached)``, an
  8,192-token prompt with ``cached`` tokens already in cache (the loader fixes 8,192).

Values are rounded to 3 decimals (microseconds), as in the shipped tables. ``--compare
TABLE`` prints the largest relative difference from an existing table; with
``--system h100_sxm --backend-version 0.5.14`` the shipped Llama-3.1-8B and Qwen3-8B tables
are reproduced exactly. Only models bundled with aiconfigurator-core (``--list-models``) or
a local directory holding a HuggingFace ``config.json`` are accepted: nothing is
downloaded.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

BACKEND = "sglang"  # the simulated engine is SGLang; other backends' kernels would not match it
PREFIX_PROMPT_TOKENS = 8192  # step_time._PREFIX_TABLE_PROMPT: the loader assumes this prompt length
_DECODE_OUTPUT_TOKENS = 2  # prefill + exactly one decode step


class CalibrationError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


class LatencyPredictor(Protocol):
    """The two methods of ``aiconfigurator_core.sdk.engine.EngineHandle`` a table needs."""

    def predict_prefill_latency(self, bs: int, isl: int, prefix: int = 0) -> float: ...

    def predict_decode_latency(self, bs: int, isl: int, osl: int = 2) -> float: ...


@dataclass(frozen=True, slots=True)
class Grid:
    """Where the table is sampled; the defaults are the shipped tables' grid."""

    prefill_input_lens: tuple[int, ...] = (128, 512, 1024, 2048, 4096, 8192, 16384)
    prefill_batches: tuple[int, ...] = (1, 2, 4, 8)
    decode_context_lens: tuple[int, ...] = (512, 2048, 8192)
    decode_batches: tuple[int, ...] = (1, 8, 16, 32, 64, 128, 256)
    prefix_cached_tokens: tuple[int, ...] = (0, 4096, 7680)


def _ms(value: float, what: str) -> float:
    """Round to microseconds; a zero, negative or NaN time means the kernel data is missing."""
    value = float(value)
    if not math.isfinite(value) or value <= 0.0:
        raise CalibrationError(f"aiconfigurator predicted {value!r} ms for {what}: no kernel data for this model/system")
    return round(value, 3)


def build_table(predictor: LatencyPredictor, model: str, system: str, grid: Grid = Grid()) -> dict:
    """The calibration table, keys in the shipped order (model, system, backend, three tables)."""
    for cached in grid.prefix_cached_tokens:
        if not 0 <= cached < PREFIX_PROMPT_TOKENS:
            raise CalibrationError(f"cached prefix {cached} must be in [0, {PREFIX_PROMPT_TOKENS})")
    prefill = {
        str(isl): {
            str(bs): _ms(predictor.predict_prefill_latency(bs, isl), f"prefill batch {bs} x {isl} tokens")
            for bs in grid.prefill_batches
        }
        for isl in grid.prefill_input_lens
    }
    decode = {
        str(ctx): {
            str(bs): _ms(
                predictor.predict_decode_latency(bs, ctx, _DECODE_OUTPUT_TOKENS),
                f"decode batch {bs} at context {ctx}",
            )
            for bs in grid.decode_batches
        }
        for ctx in grid.decode_context_lens
    }
    prefix = {
        str(cached): _ms(
            predictor.predict_prefill_latency(1, PREFIX_PROMPT_TOKENS, cached),
            f"prefill of {PREFIX_PROMPT_TOKENS} tokens with {cached} cached",
        )
        for cached in grid.prefix_cached_tokens
    }
    return {
        "model": model,
        "system": system,
        "backend": BACKEND,
        "prefill_ms": prefill,
        "decode_ms": decode,
        "prefill_prefix_ms": prefix,
    }


def table_json(table: dict) -> str:
    """Serialised exactly as the shipped files (one-space indent, trailing newline)."""
    return json.dumps(table, indent=1) + "\n"


def _cells(table: dict) -> dict[str, float]:
    cells: dict[str, float] = {}
    for name in ("prefill_ms", "decode_ms"):
        for row, by_col in table.get(name, {}).items():
            for col, ms in by_col.items():
                cells[f"{name}[{row}][{col}]"] = float(ms)
    for cached, ms in table.get("prefill_prefix_ms", {}).items():
        cells[f"prefill_prefix_ms[{cached}]"] = float(ms)
    return cells


def max_relative_deviation(table: dict, reference: dict) -> tuple[float, str, int]:
    """Largest |table / reference - 1| over the cells both tables have, its cell, and how many.

    Grids may differ (an extended table against a shipped one); no common cell is an error,
    since the comparison would be vacuous.
    """
    ours, theirs = _cells(table), _cells(reference)
    common = {cell: ms for cell, ms in theirs.items() if cell in ours}
    if not common:
        raise CalibrationError("the new table and the reference have no cell in common")
    worst, worst_cell = 0.0, ""
    for cell, ref_ms in common.items():
        deviation = abs(ours[cell] / ref_ms - 1.0) if ref_ms else abs(ours[cell])
        if deviation > worst or not worst_cell:
            worst, worst_cell = deviation, cell
    return worst, worst_cell, len(common)


# ------------------------------------------------------------ aiconfigurator (optional)
def _import_aiconfigurator() -> tuple[Any, str]:
    try:
        from importlib.metadata import PackageNotFoundError, version

        from aiconfigurator_core.sdk import engine
    except ImportError:
        raise CalibrationError(
            "aiconfigurator-core is not installed: pip install aiconfigurator-core==0.12.0 (in a separate venv)"
        ) from None
    try:
        package_version = version("aiconfigurator-core")
    except PackageNotFoundError:
        package_version = "unknown"
    return engine, package_version


def bundled_models() -> list[str]:
    """HuggingFace ids whose config.json ships inside aiconfigurator-core."""
    _import_aiconfigurator()
    from aiconfigurator_core.sdk.common import DefaultHFModels

    return sorted(DefaultHFModels)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _resolve_version(system: str, backend_version: str) -> str:
    from aiconfigurator_core.sdk import perf_database

    try:
        return str(perf_database.resolve_query_version(system, BACKEND, backend_version))
    except Exception as exc:  # aiconfigurator raises ValueError with multi-line advice
        raise CalibrationError(f"system {system!r}, {BACKEND} {backend_version!r}: {_first_line(exc)}") from None


def load_predictor(model: str, system: str, backend_version: str) -> tuple[LatencyPredictor, str, str]:
    """Compile ``model`` for ``system``; returns the predictor, literal backend version, package version."""
    engine, package_version = _import_aiconfigurator()
    if not Path(model).is_dir() and model not in bundled_models():
        raise CalibrationError(
            f"model {model!r} is not bundled with aiconfigurator-core (see --list-models) "
            "and is not a local directory with config.json; nothing is downloaded"
        )
    literal_version = _resolve_version(system, backend_version)
    try:
        handle = engine.EngineHandle.compile(model, system, BACKEND, backend_version=literal_version)
    except Exception as exc:  # any failure inside aiconfigurator becomes one line
        raise CalibrationError(
            f"aiconfigurator cannot compile {model} for {system}/{BACKEND} {literal_version}: {_first_line(exc)}"
        ) from None
    return handle, literal_version, package_version


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) <= 0 or list(values) != sorted(set(values)):
        raise argparse.ArgumentTypeError(f"expected increasing positive integers, got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", help="HuggingFace id bundled with aiconfigurator-core, or a local dir with config.json")
    parser.add_argument("--system", default="h100_sxm", help="aiconfigurator system (GPU), e.g. h100_sxm, h200_sxm, b200_sxm")
    parser.add_argument(
        "--backend-version", default="current", help="SGLang version of the kernel data, or current/previous/next"
    )
    parser.add_argument("--out", type=Path, help="where to write the JSON table")
    parser.add_argument("--compare", type=Path, help="print the max relative deviation from this existing table")
    parser.add_argument("--list-models", action="store_true", help="print the bundled models and exit")
    default = Grid()
    parser.add_argument("--prefill-lens", type=_int_list, default=default.prefill_input_lens, metavar="N,N,...")
    parser.add_argument("--decode-contexts", type=_int_list, default=default.decode_context_lens, metavar="N,N,...")
    args = parser.parse_args(argv)
    if not args.list_models and (args.model is None or args.out is None):
        parser.error("--model and --out are required")
    return args


def run(args: argparse.Namespace, echo: Callable[[str], None] = print) -> dict | None:
    """Build, write and optionally compare one table; returns it (None for --list-models)."""
    if args.list_models:
        for name in bundled_models():
            echo(name)
        return None
    reference = json.loads(args.compare.read_text()) if args.compare else None
    predictor, literal_version, package_version = load_predictor(args.model, args.system, args.backend_version)
    grid = Grid(prefill_input_lens=args.prefill_lens, decode_context_lens=args.decode_contexts)
    name = Path(args.model).name if Path(args.model).is_dir() else args.model
    table = build_table(predictor, name, args.system, grid)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table_json(table))
    echo(
        f"wrote {args.out}: {name} on {args.system}, {BACKEND} {literal_version} kernels, "
        f"aiconfigurator-core {package_version}"
    )
    if reference is not None:
        deviation, cell, compared = max_relative_deviation(table, reference)
        total = len(_cells(reference))
        echo(f"max relative deviation from {args.compare}: {deviation:.4%} at {cell} ({compared} of {total} cells)")
    return table


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except (CalibrationError, OSError, json.JSONDecodeError) as exc:
        print(f"make_calibration: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
