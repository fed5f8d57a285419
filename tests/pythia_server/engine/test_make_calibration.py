"""benchmarks/make_calibration.py: table assembly always, aiconfigurator itself when installed."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from importlib import resources
from pathlib import Path
from types import ModuleType

import pytest

from pythia_server.engine.step_time import StepTimeModel

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "make_calibration.py"
SHIPPED = "aic_Meta-Llama-3.1-8B.json"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_calibration", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


mc = _load_script()


def _shipped_text() -> str:
    return resources.files("pythia_server.data").joinpath(SHIPPED).read_text()


class FakePredictor:
    """Smooth made-up kernel times (ms) with the shape of aiconfigurator's; records each call."""

    def __init__(self) -> None:
        self.decode_calls: list[tuple[int, int, int]] = []

    def predict_prefill_latency(self, bs: int, isl: int, prefix: int = 0) -> float:
        new = isl - prefix
        return 5.0 + 0.0211 * bs * new + 4e-7 * bs * new * new + 8e-7 * bs * new * prefix

    def predict_decode_latency(self, bs: int, isl: int, osl: int = 2) -> float:
        self.decode_calls.append((bs, isl, osl))
        return 6.5 + 0.011 * bs + 2.3e-5 * bs * isl


def test_table_has_the_shipped_shape_and_the_predicted_values() -> None:
    fake = FakePredictor()
    table = mc.build_table(fake, "org/Model-1B", "h200_sxm")
    shipped = json.loads(_shipped_text())

    assert list(table) == list(shipped)  # same keys in the same order
    assert (table["model"], table["system"], table["backend"]) == ("org/Model-1B", "h200_sxm", "sglang")
    for name in ("prefill_ms", "decode_ms"):
        assert list(table[name]) == list(shipped[name])
        for row in shipped[name]:
            assert list(table[name][row]) == list(shipped[name][row])
    assert list(table["prefill_prefix_ms"]) == list(shipped["prefill_prefix_ms"])

    assert table["prefill_ms"]["4096"]["4"] == round(fake.predict_prefill_latency(4, 4096), 3)
    assert table["decode_ms"]["2048"]["64"] == round(6.5 + 0.011 * 64 + 2.3e-5 * 64 * 2048, 3)
    assert table["prefill_prefix_ms"]["4096"] == round(fake.predict_prefill_latency(1, 8192, 4096), 3)
    assert table["prefill_prefix_ms"]["0"] == table["prefill_ms"]["8192"]["1"]
    assert {osl for _, _, osl in fake.decode_calls} == {2}  # one decode step after the prefill


def test_generated_table_is_serialised_like_the_shipped_file_and_loads_in_the_engine(tmp_path: Path) -> None:
    shipped_text = _shipped_text()
    assert mc.table_json(json.loads(shipped_text)) == shipped_text

    path = tmp_path / "aic_Model-1B.json"
    path.write_text(mc.table_json(mc.build_table(FakePredictor(), "org/Model-1B", "h100_sxm")))
    model = StepTimeModel.load(str(path), overhead_ms=0.0)
    table = json.loads(path.read_text())
    # batch-1 prefill and every decode grid point come back exactly through the loader
    assert model.prefill_kernel_ms([2048], [0]) == pytest.approx(table["prefill_ms"]["2048"]["1"], rel=1e-9)
    assert model.decode_s(32, 8192) * 1000 == pytest.approx(table["decode_ms"]["8192"]["32"], rel=1e-9)
    assert model.prefix_coef_ms > 0


@pytest.mark.parametrize("bad_ms", [0.0, -1.0, math.nan])
def test_missing_kernel_data_is_an_error_naming_the_cell(bad_ms: float) -> None:
    class Broken(FakePredictor):
        def predict_decode_latency(self, bs: int, isl: int, osl: int = 2) -> float:
            return bad_ms if (bs, isl) == (128, 8192) else super().predict_decode_latency(bs, isl, osl)

    with pytest.raises(mc.CalibrationError, match="decode batch 128 at context 8192"):
        mc.build_table(Broken(), "org/Model-1B", "h100_sxm")


def test_max_relative_deviation_finds_the_worst_common_cell() -> None:
    reference = json.loads(_shipped_text())
    assert mc.max_relative_deviation(reference, reference) == (0.0, "prefill_ms[128][1]", 52)

    perturbed = json.loads(_shipped_text())
    perturbed["decode_ms"]["2048"]["64"] *= 1.02
    perturbed["prefill_ms"]["512"]["2"] *= 0.995
    deviation, cell, _ = mc.max_relative_deviation(perturbed, reference)
    assert cell == "decode_ms[2048][64]"
    assert deviation == pytest.approx(0.02)

    del perturbed["prefill_ms"]["512"]  # a coarser grid is compared on what it has
    assert mc.max_relative_deviation(perturbed, reference)[1:] == ("decode_ms[2048][64]", 48)
    with pytest.raises(mc.CalibrationError, match="no cell in common"):
        mc.max_relative_deviation({"prefill_ms": {"100": {"1": 1.0}}}, reference)


def test_cli_writes_the_table_and_reports_the_deviation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(mc, "load_predictor", lambda model, system, version: (FakePredictor(), "0.5.14", "0.12.0"))
    out = tmp_path / "sub" / "aic_Model-1B.json"
    reference = tmp_path / "ref.json"
    reference.write_text(mc.table_json(mc.build_table(FakePredictor(), "org/Model-1B", "h100_sxm")))

    argv = ["--model", "org/Model-1B", "--out", str(out), "--compare", str(reference), "--prefill-lens", "256,1024"]
    assert mc.main(argv) == 0
    table = json.loads(out.read_text())
    assert list(table["prefill_ms"]) == ["256", "1024"]
    printed = capsys.readouterr().out
    assert "sglang 0.5.14 kernels" in printed
    assert "max relative deviation" in printed and "0.0000%" in printed and "(28 of 52 cells)" in printed  # row 1024, decode, prefix


def test_without_aiconfigurator_the_cli_fails_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "aiconfigurator_core", None)  # import now raises ImportError
    monkeypatch.setitem(sys.modules, "aiconfigurator_core.sdk", None)
    out = tmp_path / "aic.json"
    assert mc.main(["--model", "meta-llama/Meta-Llama-3.1-8B", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "aiconfigurator-core is not installed" in err
    assert not out.exists()


def test_aiconfigurator_reproduces_the_shipped_llama_table() -> None:
    pytest.importorskip("aiconfigurator_core", reason="aiconfigurator-core not installed (optional: pip install aiconfigurator-core==0.12.0)")
    predictor, version, _ = mc.load_predictor("meta-llama/Meta-Llama-3.1-8B", "h100_sxm", "0.5.14")
    table = mc.build_table(predictor, "meta-llama/Meta-Llama-3.1-8B", "h100_sxm")
    reference = json.loads(_shipped_text())

    assert version == "0.5.14"
    assert list(table) == list(reference)
    deviation, cell, compared = mc.max_relative_deviation(table, reference)
    assert compared == 52
    assert deviation < 0.01, (cell, deviation)
