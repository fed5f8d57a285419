"""How many requests a replica should run at once: a cap derived from the calibration table.

SGLang orders only its waiting queue; once a call is in the running batch it shares every
decode step with all the others. When everything fits in the batch, priority has nothing
to order and the batch is processor-shared: N equal workflows all finish near the end
(mean JCT ~ the makespan), where running them in priority order would finish them one after
another (mean ~ half). A cap on running requests (``--max-running-requests``) makes the
queue that priority orders. The cap costs throughput only where the batch still buys it,
so it is set from the step-time model, not tuned by hand:

* **Knee.** A decode step costs a fixed part (weights read once) plus a part per token of
  context (KV read), so tokens/s = N / step(N, context) saturates. The knee is the
  smallest batch (doubling from 8) past which doubling it adds less than ``knee_gain``
  (10%) more tokens/s at the typical agent context.
* **KV.** The running batch's own KV (N x typical context) may fill ``kv_share`` of the
  pool; the rest keeps the prefixes of sessions between steps (tool calls, think time),
  so they hit when they come back instead of being evicted by more concurrent calls.

The cap is the smaller of the two. The typical context is what the profiler has learned
(the call-weighted mean prompt + output of its agents), 4,608 tokens before it has learned
any. For Llama-3.1-8B on one H100 (451k KV tokens) at 4,608 tokens the KV bound (73) is
well below the knee (256): decode is bound by KV reads long before the batch stops paying,
and the pool fills first; deep research (~4,000 tokens a call) gets 84, ChatDev (~2,000) 170-180.
"""

from __future__ import annotations

from dataclasses import dataclass

from pythia_server.engine.step_time import StepTimeModel
from pythia_server.profiler.types import ProfilerSnapshot

__all__ = ["DEFAULT_CONTEXT_TOKENS", "RunningCap", "derive_running_cap", "learned_context_tokens"]

#: The typical agent call (prompt + output) when the profiler has learned nothing yet.
DEFAULT_CONTEXT_TOKENS = 4608
_FIRST_BATCH = 8
_LAST_BATCH = 4096  # SGLang's own ceiling on running requests


@dataclass(frozen=True, slots=True)
class RunningCap:
    """The cap and the two bounds it came from (for the reason and the docs)."""

    max_running_requests: int
    knee_batch: int
    kv_batch: int
    reason: str


def _tokens_per_s(step_time: StepTimeModel, batch: int, context_tokens: int) -> float:
    return batch / step_time.decode_s(batch, context_tokens)


def learned_context_tokens(snapshot: ProfilerSnapshot, block_size: int) -> int | None:
    """Call-weighted mean of prompt + mean output over every agent the profiler has learned.

    None before it has learned a call. The cap is a launch flag, so it is sized once, for
    the workflows seen so far (a gateway that restarts with a stored profiler resizes it).
    """
    calls = tokens = 0.0
    for workflow in snapshot.workflows:
        for agent, row in workflow.prefixes.items():
            n = row.get("calls", 0.0)
            output = workflow.agents[agent].mean_tokens if agent in workflow.agents else 0.0
            calls += n
            tokens += n * (row.get("prompt_blocks_mean", 0.0) * block_size + output)
    return max(1, round(tokens / calls)) if calls else None


def derive_running_cap(
    step_time: StepTimeModel,
    kv_tokens: int,
    context_tokens: int = DEFAULT_CONTEXT_TOKENS,
    kv_share: float = 0.75,
    knee_gain: float = 0.1,
) -> RunningCap:
    """The running-request cap for one replica with ``kv_tokens`` of KV pool."""
    if kv_tokens <= 0 or context_tokens <= 0:
        raise ValueError("kv_tokens and context_tokens must be positive")
    if not 0.0 < kv_share <= 1.0 or knee_gain <= 0.0:
        raise ValueError("kv_share must be within (0, 1] and knee_gain positive")
    knee = _FIRST_BATCH
    while knee < _LAST_BATCH:
        gain = _tokens_per_s(step_time, 2 * knee, context_tokens) / _tokens_per_s(step_time, knee, context_tokens)
        if gain - 1.0 < knee_gain:
            break
        knee *= 2
    kv_batch = max(1, int(kv_share * kv_tokens // context_tokens))
    cap = max(1, min(knee, kv_batch))
    bound = "KV" if kv_batch <= knee else "knee"
    reason = (f"cap {cap} ({bound}-bound): knee {knee} (doubling adds < {knee_gain:.0%} tokens/s at "
              f"{context_tokens} tokens of context), KV {kv_batch} ({kv_share:.0%} of {kv_tokens} tokens)")
    return RunningCap(cap, knee, kv_batch, reason)
