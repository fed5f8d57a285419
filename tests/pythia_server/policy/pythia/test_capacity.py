from __future__ import annotations

import pytest

from pythia_server.engine.step_time import StepTimeModel
from pythia_server.engine.types import EngineConfig
from pythia_server.policy.pythia.capacity import (
    derive_running_cap,
    learned_context_tokens,
)
from pythia_server.profiler.profiler import WorkflowProfiler
from tests.pythia_server.policy.pythia.fakes import ROLE, trained_profiler


@pytest.fixture(scope="module")
def step_time() -> StepTimeModel:
    return StepTimeModel.load()


def _gain(step_time: StepTimeModel, batch: int, context: int) -> float:
    """Tokens/s of twice the batch over tokens/s of the batch."""
    return (2 * batch / step_time.decode_s(2 * batch, context)) / (batch / step_time.decode_s(batch, context))


def test_an_h100_kv_pool_binds_before_the_throughput_knee(step_time: StepTimeModel) -> None:
    kv = EngineConfig.from_gpu().max_total_num_tokens
    cap = derive_running_cap(step_time, kv, context_tokens=4608)
    assert cap.kv_batch == int(0.75 * kv // 4608) < cap.knee_batch
    assert cap.max_running_requests == cap.kv_batch
    assert cap.reason.startswith(f"cap {cap.kv_batch} (KV-bound)")


def test_the_knee_is_where_doubling_the_batch_stops_paying(step_time: StepTimeModel) -> None:
    cap = derive_running_cap(step_time, kv_tokens=10**9, context_tokens=4608)  # KV never binds
    knee = cap.knee_batch
    assert cap.max_running_requests == knee and "knee-bound" in cap.reason
    assert _gain(step_time, knee, 4608) < 1.1 <= _gain(step_time, knee // 2, 4608)


def test_longer_contexts_get_smaller_caps(step_time: StepTimeModel) -> None:
    kv = EngineConfig.from_gpu().max_total_num_tokens
    caps = [derive_running_cap(step_time, kv, context_tokens=c).max_running_requests for c in (1024, 4096, 16_384)]
    assert caps == sorted(caps, reverse=True) and caps[0] > caps[-1]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kv_tokens": 0}, "positive"), ({"context_tokens": 0}, "positive"),
    ({"kv_share": 1.5}, "kv_share"), ({"knee_gain": 0.0}, "knee_gain"),
])
def test_bad_arguments_are_refused(step_time: StepTimeModel, kwargs: dict[str, float], message: str) -> None:
    args: dict[str, float] = {"kv_tokens": 400_000, "context_tokens": 4096, **kwargs}
    with pytest.raises(ValueError, match=message):
        derive_running_cap(step_time, **args)  # type: ignore[arg-type]


def test_the_typical_context_is_the_call_weighted_mean_the_profiler_learned() -> None:
    assert learned_context_tokens(WorkflowProfiler().snapshot(), 64) is None
    # fakes.feed_session: the planner and searchers send the role plus one block, the writer the
    # role plus its five-block history; prompts are counted in the blocks the profiler saw.
    sizes = [(len(ROLE) + 1) * 64] * 4 + [(len(ROLE) + 5) * 64]
    outputs = [200, 300, 320, 310, 800]
    tokens = learned_context_tokens(trained_profiler().snapshot(), 64)
    assert tokens == pytest.approx((sum(sizes) + sum(outputs)) / 5, rel=0.01)
