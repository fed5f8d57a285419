from __future__ import annotations

import random

import pytest

from pythia_server.replay.generators._common import QuantileTable


def test_quantile_table_samples_inside_its_range_with_its_median() -> None:
    table = QuantileTable.percentiles((0, 50, 100), (10, 20, 100))
    rng = random.Random(0)
    samples = sorted(table.sample(rng) for _ in range(4001))
    assert samples[0] >= 10 and samples[-1] <= 100
    assert samples[2000] == pytest.approx(20, abs=1.5)
    assert QuantileTable.constant(7).sample(rng) == 7
    assert table.scaled(2).values == (20, 40, 200)


def test_quantile_table_rejects_bad_tables() -> None:
    with pytest.raises(ValueError):
        QuantileTable((0.0, 0.5), (1, 2))
    with pytest.raises(ValueError):
        QuantileTable((0.0, 1.0), (3, 2))
