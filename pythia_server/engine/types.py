"""Values passed in and out of the engine core: config, submissions, step results, load."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from pythia_server.engine.output_length import OutputLengthModel

__all__ = [
    "DecodeRun",
    "EngineConfig",
    "EngineError",
    "EngineLoad",
    "FinishedRequest",
    "GenerateRequest",
    "StepResult",
    "TokenDelta",
]

SCHEDULE_POLICIES = ("fcfs", "lpm", "lof")

#: Weights (GiB, bf16) and KV bytes per token (layers x KV heads x head dim x K,V x 2 bytes).
MODEL_MEMORY: dict[str, tuple[float, int]] = {
    "Meta-Llama-3.1-8B": (14.96, 32 * 8 * 128 * 2 * 2),
    "Qwen3-8B": (15.26, 36 * 8 * 128 * 2 * 2),
}


class EngineError(ValueError):
    """A request the engine cannot accept (the HTTP layer turns it into a 400)."""


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """SGLang server arguments that shape scheduling and caching (same names, same defaults).

    ``max_total_num_tokens`` is the KV pool in tokens; SGLang derives it from GPU memory
    (about 400k tokens for Llama-3.1-8B on one H100 80GB at the default
    ``mem_fraction_static``). ``max_running_requests`` None means SGLang's derivation
    (``model_executor/model_runner.py``): ``clamp(max_total_num_tokens / context_length *
    512, 2048, 4096)``, further capped at half the KV pool.
    """

    page_size: int = 1
    max_total_num_tokens: int = 400_000
    max_running_requests: int | None = None
    context_length: int = 131_072
    chunked_prefill_size: int = 8192  # <= 0 disables chunking
    max_prefill_tokens: int = 16_384
    schedule_policy: str = "fcfs"
    radix_eviction_policy: str = "lru"
    disable_radix_cache: bool = False
    enable_mixed_chunk: bool = False
    enable_priority_scheduling: bool = False
    schedule_low_priority_values_first: bool = False
    enable_priority_preemption: bool = True  # False = SGLang's --disable-priority-preemption
    enable_session_radix_cache: bool = False  # a finished request's KV is kept for its session_id
    priority_scheduling_preemption_threshold: int = 10
    init_new_token_ratio: float = 0.7  # SGLang global_config.default_init_new_token_ratio
    min_new_token_ratio_factor: float = 0.14
    new_token_ratio_decay_steps: int = 600
    clip_max_new_tokens: int = 4096  # SGLang CLIP_MAX_NEW_TOKENS for admission estimates
    eos_token_id: int = 128_009  # Llama-3 <|eot_id|>
    seed: int = 0
    output_length: OutputLengthModel = field(default_factory=OutputLengthModel)

    def __post_init__(self) -> None:
        if self.page_size <= 0:
            raise ValueError("page_size must be positive")
        if self.max_total_num_tokens < self.page_size:
            raise ValueError("max_total_num_tokens must hold at least one page")
        if self.schedule_policy not in SCHEDULE_POLICIES:
            raise ValueError(f"schedule_policy must be one of {SCHEDULE_POLICIES}")
        if self.max_running_requests is not None and self.max_running_requests <= 0:
            raise ValueError("max_running_requests must be positive")

    @classmethod
    def from_gpu(
        cls,
        model: str = "Meta-Llama-3.1-8B",
        gpu_memory_gib: float = 79.6,
        mem_fraction_static: float = 0.88,
        **overrides: Any,
    ) -> EngineConfig:
        """KV capacity as SGLang sizes it (``model_executor/model_runner.py``,
        ``profile_max_num_token``): the static fraction of GPU memory, minus the weights,
        divided by the KV bytes of one token (layers x KV heads x head dim x 2 x dtype bytes).
        Defaults: one H100 SXM 80GB (79.6 GiB visible) at a static fraction of 0.88.
        """
        if model not in MODEL_MEMORY:
            raise ValueError(f"unknown model {model!r}; known: {', '.join(sorted(MODEL_MEMORY))}")
        weights_gib, kv_bytes_per_token = MODEL_MEMORY[model]
        kv_gib = gpu_memory_gib * mem_fraction_static - weights_gib
        if kv_gib <= 0:
            raise ValueError("the weights do not leave room for a KV cache at this memory fraction")
        tokens = int(kv_gib * (1 << 30) // kv_bytes_per_token)
        return cls(max_total_num_tokens=tokens, **overrides)

    @property
    def running_request_cap(self) -> int:
        if self.max_running_requests is not None:
            return self.max_running_requests
        derived = int(self.max_total_num_tokens / self.context_length * 512)
        return max(1, min(max(derived, 2048), 4096, self.max_total_num_tokens // 2))


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    rid: str
    input_ids: list[int]  # kept by the engine, not copied: do not mutate after submitting
    max_new_tokens: int = 128
    ignore_eos: bool = False
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    priority: int | None = None  # None: the least urgent value, as SGLang treats a missing priority
    session_id: str | None = None
    owner: Hashable | None = None  # recorded on the radix nodes it touches (cache-hint eviction)


@dataclass(frozen=True, slots=True)
class TokenDelta:
    """New output tokens of one request at the end of a step."""

    rid: str
    token_ids: list[int]
    text: str
    cached_tokens: int = 0  # of the prompt, known once its prefill started


@dataclass(frozen=True, slots=True)
class FinishedRequest:
    rid: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    finish_reason: dict[str, Any]  # SGLang's shape: {"type": "length"|"stop"|"abort", ...}
    output_ids: list[int]
    text: str
    arrival_s: float
    first_token_s: float | None
    finish_s: float
    retractions: int = 0


@dataclass(frozen=True, slots=True)
class StepResult:
    """One scheduler step: it starts at ``start_s`` and its outputs appear at ``end_s``."""

    kind: str  # "prefill", "decode" or "mixed"
    start_s: float
    duration_s: float
    batch_size: int
    prefill_tokens: int
    deltas: list[TokenDelta]
    finished: list[FinishedRequest]
    retracted: list[str] = field(default_factory=list)
    steps: int = 1  # decode steps folded into this result (offline replay runs many at once)

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass(frozen=True, slots=True)
class DecodeRun:
    """Consecutive decode steps of an unchanged batch, each ``step_s`` long, not yet committed."""

    start_s: float
    step_s: float
    steps: int
    reqs: list[Any]  # the engine's running requests

    def steps_done_by(self, at_s: float) -> int:
        """Steps finished or in progress at ``at_s`` (a step under way completes)."""
        if at_s <= self.start_s:
            return 0
        return min(self.steps, -int(-(at_s - self.start_s) // self.step_s))


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """What SGLang's /v1/loads and /metrics report, from the scheduler's side."""

    num_running_reqs: int
    num_waiting_reqs: int
    num_used_tokens: int  # KV held by requests and locked prefixes (SGLang excludes evictable cache)
    cached_tokens: int  # tokens in the radix cache, locked or not
    evictable_tokens: int
    free_tokens: int  # never-allocated KV (evictable cache is extra headroom)
    max_total_num_tokens: int
    max_running_requests: int
    waiting_tokens: int  # prompt tokens of waiting requests
    prompt_tokens_total: int
    cached_tokens_total: int
    generation_tokens_total: int
    requests_total: int
    retractions_total: int  # decode-time retractions under KV pressure
    preemptions_total: int = 0  # running requests displaced by more urgent ones

    @property
    def token_usage(self) -> float:
        return self.num_used_tokens / self.max_total_num_tokens

    @property
    def cache_hit_rate(self) -> float:
        return self.cached_tokens_total / self.prompt_tokens_total if self.prompt_tokens_total else 0.0
