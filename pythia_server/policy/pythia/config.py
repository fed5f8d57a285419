"""Pythia's policy knobs and the switches the ablation table turns off one at a time."""

from __future__ import annotations

from dataclasses import dataclass

#: How the lookahead router uses cache affinity (both kept so the bench can measure both).
AFFINITY_MODES = ("tiebreak", "weighted")
#: What the priority policy orders by: whole sessions oldest first (with a shortest-remaining
#: term), or each call by its session's remaining critical path (the first design, measured worse).
PRIORITY_ORDERS = ("session", "critical-path")


@dataclass(frozen=True, slots=True)
class PythiaConfig:
    """One config for the whole bundle; every mechanism has an off switch.

    Costs are per token on one replica (Llama-3.1-8B on an H100 order of magnitude:
    prefill ~2.5e-5 s a token; a decode token adds ~1.5e-4 s to a batched step, its marginal cost).
    They only need to be right relative to each other.
    """

    # -- switches (ablation)
    retention: bool = True  # predicted-reuse eviction order (else plain LRU)
    warm: bool = True  # prefill-only warms of the predicted next prefix
    lookahead: bool = True  # placement by predicted KV demand and work (else cache-aware-like)
    priority: bool = True  # session-order priority (else FCFS)
    running_cap: bool = True  # cap running requests per replica (capacity.py) so priority has a queue
    mixed_chunk: bool = True  # --enable-mixed-chunk: the capped batch keeps decoding while new calls prefill
    # -- shared
    block_size: int = 64
    prefill_s_per_token: float = 2.5e-5
    decode_s_per_token: float = 1.5e-4
    default_output_tokens: int = 256  # when neither a bound nor max_tokens is known
    max_sessions: int = 100_000  # live and recently ended sessions remembered
    # -- cache manager
    min_warm_confidence: float = 0.6  # probability of the predicted next agent
    min_warm_tokens: int = 256  # smaller prefixes are cheaper to recompute than to plan
    warm_headroom_fraction: float = 0.2  # free KV over total KV needed to warm
    warm_lead_s: float = 0.05  # start the warm this long before prefill of it must end
    retention_levels: int = 64  # eviction ranks for live sessions (1 .. levels)
    # -- lookahead router
    affinity: str = "tiebreak"  # "tiebreak" or "weighted" (tiebreak measured better, docs/policies.md)
    affinity_weight: float = 1.0  # weighted: how much an uncached prefill token costs
    tie_tolerance: float = 0.1  # tiebreak: work within this fraction (or tie_floor_s) ties
    tie_floor_s: float = 0.05
    max_kv_fill: float = 0.95  # predicted demand may fill this share of a replica's KV
    cache_threshold: float = 0.3  # reactive fallback, as sgl-router's cache_aware
    balance_abs_threshold: int = 64
    balance_rel_threshold: float = 1.5
    # -- running cap (capacity.py; --max-running-requests)
    max_running_requests: int | None = None  # set: use it; None: derived from the calibration table
    cap_context_tokens: int | None = None  # typical call context (prompt + output); None: learned, else 4,608
    cap_kv_share: float = 0.75  # share of the KV pool the running batch may fill
    cap_knee_gain: float = 0.1  # a batch doubling that adds less tokens/s than this is past the knee
    # -- priority
    priority_order: str = "session"  # "session" or "critical-path" (PRIORITY_ORDERS)
    priority_resolution_s: float = 0.01  # session order: start times this close tie (FCFS by call)
    srpt_s_per_token: float = 0.0  # session order: a token of predicted remaining work counts as this much later a start
    # (0: pure session FCFS; 0.002-1.0 neutral to 5% worse on deep research, 0.002 10% worse on ChatDev; docs/policies.md)
    priority_levels: int = 16  # levels of remaining work, each PRIORITY_STEP apart
    priority_step: int = 4  # a request preempts only > 10 apart: a gap of 3 levels
    work_unit_tokens: float = 64.0  # remaining work of one unit; each level doubles it
    fanout_bonus_levels: float = 1.0  # per doubling of the downstream width
    priority_preemption: bool = False  # True: a > 10 higher priority preempts (measured worse)
    ageing_s_per_point: float = 1.0  # a waiting call gains one priority point a second
    max_age_points: int = 40

    def __post_init__(self) -> None:
        if self.priority_order not in PRIORITY_ORDERS:
            raise ValueError(f"priority_order must be one of {', '.join(PRIORITY_ORDERS)}, got {self.priority_order!r}")
        if self.max_running_requests is not None and self.max_running_requests < 1:
            raise ValueError("max_running_requests must be at least 1")
        if self.priority_resolution_s <= 0 or self.srpt_s_per_token < 0 or (self.cap_context_tokens or 1) < 1:
            raise ValueError("priority_resolution_s and cap_context_tokens must be positive, srpt_s_per_token >= 0")
        if self.affinity not in AFFINITY_MODES:
            raise ValueError(f"affinity must be one of {', '.join(AFFINITY_MODES)}, got {self.affinity!r}")
        if self.block_size <= 0:
            raise ValueError("block_size must be positive")
        if not 0.0 <= self.min_warm_confidence <= 1.0:
            raise ValueError("min_warm_confidence must be within [0, 1]")
        if not 0.0 <= self.warm_headroom_fraction < 1.0:
            raise ValueError("warm_headroom_fraction must be within [0, 1)")
        if not 0.0 < self.max_kv_fill <= 2.0:
            raise ValueError("max_kv_fill must be within (0, 2]")
        if self.priority_levels < 2 or self.priority_step < 1 or self.retention_levels < 2:
            raise ValueError("priority_levels, retention_levels >= 2 and priority_step >= 1 are required")
        if self.ageing_s_per_point <= 0 or self.work_unit_tokens <= 0:
            raise ValueError("ageing_s_per_point and work_unit_tokens must be positive")
