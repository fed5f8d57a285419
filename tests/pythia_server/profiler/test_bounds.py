import math
import random

import pytest

from pythia_server.profiler.bounds import (
    OutputSamples,
    binomial_cdf,
    min_samples_for_bound,
    order_statistic_rank,
)


def _brute_rank(n: int, q: float, c: float) -> int | None:
    return next((k for k in range(1, n + 1) if binomial_cdf(k - 1, n, q) >= c), None)


@pytest.mark.parametrize("n", [1, 5, 21, 22, 23, 40, 100, 333, 512])
@pytest.mark.parametrize(("q", "c"), [(0.9, 0.9), (0.5, 0.95), (0.99, 0.9), (0.8, 0.99)])
def test_rank_is_the_smallest_order_statistic_meeting_the_confidence(n: int, q: float, c: float) -> None:
    assert order_statistic_rank(n, q, c) == _brute_rank(n, q, c)


def test_too_few_samples_give_no_bound() -> None:
    needed = min_samples_for_bound(0.9, 0.9)
    assert needed == 22  # 0.9**22 < 0.1 <= 0.9**21
    samples = OutputSamples(512)
    for value in range(needed - 1):
        samples.add(value)
    assert samples.bound(0.9, 0.9) is None
    assert samples.summary(0.9, 0.9).bound_tokens is None
    samples.add(1000)
    assert samples.bound(0.9, 0.9) == 1000  # with exactly 22 samples only the maximum qualifies


@pytest.mark.parametrize(
    ("name", "draw", "true_quantile"),
    [
        ("exponential", lambda r: r.expovariate(1 / 300), -300 * math.log(0.1)),
        ("uniform", lambda r: r.uniform(0, 1000), 900.0),
        ("lognormal", lambda r: r.lognormvariate(5, 1), math.exp(5 + 1.2815515655446004)),
    ],
)
def test_bound_covers_the_true_quantile_at_the_stated_confidence(name, draw, true_quantile) -> None:
    rng = random.Random(42)
    trials, n = 600, 60
    held = 0
    for _ in range(trials):
        samples = OutputSamples(n)
        for _ in range(n):
            samples.add(round(draw(rng)))
        bound = samples.bound(0.9, 0.9)
        assert bound is not None
        held += bound >= true_quantile - 0.5  # lengths are rounded to whole tokens
    # Confidence 0.9 (exact order statistic, >= 0.9 by construction); allow 3 sd of noise.
    assert held / trials >= 0.9 - 3 * math.sqrt(0.09 / trials), name
    # ... and it is not trivially the maximum: it is below it most of the time.


def test_bound_is_not_simply_the_maximum_with_many_samples() -> None:
    rng = random.Random(3)
    samples = OutputSamples(512)
    values = [round(rng.expovariate(1 / 200)) for _ in range(500)]
    for v in values:
        samples.add(v)
    bound = samples.bound(0.9, 0.9)
    assert bound is not None and bound < max(values)
    assert sorted(values)[int(0.9 * 500) - 1] <= bound


def test_window_slides_so_the_bound_follows_a_changed_agent() -> None:
    samples = OutputSamples(50)
    for _ in range(50):
        samples.add(1000)
    for _ in range(50):
        samples.add(10)
    assert len(samples) == 50
    summary = samples.summary(0.9, 0.9)
    assert summary.bound_tokens == 10 and summary.mean_tokens == 10 and summary.median_tokens == 10


def test_extend_keeps_the_same_window_as_one_add_per_value() -> None:
    rng = random.Random(3)
    one_by_one, batched = OutputSamples(50), OutputSamples(50)
    for _ in range(40):
        batch = [rng.randint(-5, 2000) for _ in range(rng.randint(0, 9))]
        for value in batch:
            one_by_one.add(value)
        batched.extend(batch)
        assert batched.summary(0.9, 0.9) == one_by_one.summary(0.9, 0.9)
    assert len(batched) == 50
