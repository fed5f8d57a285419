"""Step times stay within 10% of the calibration table (overhead removed)."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from pythia_server.engine.step_time import StepTimeModel


def _table(name: str) -> dict:
    return json.loads(resources.files("pythia_server.data").joinpath(f"aic_{name}.json").read_text())


@pytest.mark.parametrize("name", ["Meta-Llama-3.1-8B", "Qwen3-8B"])
def test_single_request_prefill_and_decode_match_the_table(name: str) -> None:
    model = StepTimeModel.load(name, overhead_ms=2.0)
    table = _table(name)
    for isl, by_batch in table["prefill_ms"].items():
        expected = by_batch["1"]
        got_ms = model.prefill_s([int(isl)], [0]) * 1000 - 2.0
        assert got_ms == pytest.approx(expected, rel=0.10), (isl, expected, got_ms)
    for ctx, by_batch in table["decode_ms"].items():
        for batch, expected in by_batch.items():
            got_ms = model.decode_s(int(batch), int(ctx)) * 1000 - 2.0
            assert got_ms == pytest.approx(expected, rel=0.10), (ctx, batch, expected, got_ms)


def test_cached_prefix_costs_what_the_prefix_table_says() -> None:
    model = StepTimeModel.load()
    for cached, expected in _table("Meta-Llama-3.1-8B")["prefill_prefix_ms"].items():
        got = model.prefill_kernel_ms([8192 - int(cached)], [int(cached)])
        assert got == pytest.approx(expected, rel=0.10)


def test_batched_prefill_tracks_the_table_and_is_cheaper_than_one_long_prompt() -> None:
    model = StepTimeModel.load()
    table = _table("Meta-Llama-3.1-8B")["prefill_ms"]
    assert model.prefill_kernel_ms([1024] * 8, [0] * 8) == pytest.approx(table["1024"]["8"], rel=0.10)
    assert model.prefill_kernel_ms([1024] * 8, [0] * 8) < model.prefill_kernel_ms([8192], [0])


def test_interpolation_is_monotone_between_grid_points() -> None:
    model = StepTimeModel.load()
    assert model.decode_kernel_ms(8, 2048) < model.decode_kernel_ms(48, 2048) < model.decode_kernel_ms(64, 2048)
    assert model.decode_kernel_ms(64, 4000) < model.decode_kernel_ms(64, 8192)
    assert model.prefill_kernel_ms([3000], [0]) < model.prefill_kernel_ms([4096], [0])
    assert model.prefill_kernel_ms([32768], [0]) > 2 * model.prefill_kernel_ms([16384], [0])  # extrapolated


def test_mixed_step_costs_more_than_its_prefill_alone() -> None:
    model = StepTimeModel.load()
    prefill = model.prefill_s([4096], [0])
    mixed = model.mixed_s([4096], [0], decode_batch=64, decode_mean_context=2048)
    assert prefill < mixed < prefill + model.decode_s(64, 2048)


def test_unknown_table_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ValueError, match="available: .*Meta-Llama-3.1-8B"):
        StepTimeModel.load("no-such-model")
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(_table("Qwen3-8B")))
    assert StepTimeModel.load(str(path)).name == "custom"
