"""The profiler's values: what it is fed, how it is configured, what it answers.

Everything here is a small frozen dataclass so the gateway, the replay and the
policies can pass them around and compare them without copying or locking.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The token a session history starts with (no call yet).
START = "<start>"
#: The "next agent" that means the session ends after this step.
END = "<end>"
#: Stands for a call that carried no agent tag.
UNKNOWN_AGENT = "<unknown>"
#: Stands for agents beyond a workflow type's cap (random names must not grow memory).
OTHER_AGENT = "<other>"


@dataclass(frozen=True, slots=True)
class CallObservation:
    """One finished LLM call, as the gateway's store or the replay recorded it.

    Times are seconds on the driver's clock (wall or virtual). ``block_hashes`` are the
    chained hashes of the prompt's full KV blocks of ``block_size`` tokens each, in order.
    ``parent`` is the spawning agent (or call id) for fan-out and sub-agents.
    """

    workflow: str | None
    session: str | None
    agent: str | None
    start_s: float
    end_s: float
    prompt_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    parent: str | None = None
    call_id: str = ""
    block_hashes: tuple[int, ...] = ()
    block_size: int = 64


@dataclass(frozen=True, slots=True)
class ProfilerConfig:
    """Knobs of the profiler. Defaults are generic, not tuned to one workload."""

    # Automaton
    max_order: int = 3  # longest agent history a context model may condition on
    loop_count_cap: int = 8  # visit counts above this are one state (at most 31)
    min_context_evidence: float = 1.0  # decayed sessions a context needs before it beats a shorter one
    half_life_sessions: float = 10.0  # older sessions weigh half after this many newer ones
    prune_min_probability: float = 0.05  # edges rarer than this are left out of summaries
    # Output-length bound
    bound_quantile: float = 0.9
    bound_confidence: float = 0.9
    max_samples_per_agent: int = 512  # the latest outputs the bound is computed from
    # Shadow / proactive
    validation_sessions: int = 20  # latest sessions the mode is judged on
    min_validation_sessions: int = 8
    promote_top1: float = 0.7
    promote_coverage: float = 0.85
    drift_sessions: int = 5  # the most recent sessions checked for drift
    demote_top1: float = 0.5
    demote_coverage: float = 0.7
    # Memory bounds (a misbehaving client must not exhaust the server)
    max_workflows: int = 256
    max_agents_per_workflow: int = 256
    max_contexts_per_workflow: int = 50_000
    max_live_sessions: int = 10_000
    max_calls_per_session: int = 4096
    max_recently_ended: int = 10_000
    max_prefix_blocks: int = 4096

    def __post_init__(self) -> None:
        if not 0.0 < self.bound_quantile < 1.0:
            raise ValueError(f"bound_quantile must be in (0, 1), got {self.bound_quantile}")
        if not 0.0 < self.bound_confidence < 1.0:
            raise ValueError(f"bound_confidence must be in (0, 1), got {self.bound_confidence}")
        if not 1 <= self.max_order <= 7:
            raise ValueError(f"max_order must be in 1..7, got {self.max_order}")
        if not 1 <= self.loop_count_cap <= 31:
            raise ValueError(f"loop_count_cap must be in 1..31, got {self.loop_count_cap}")
        if self.half_life_sessions <= 0:
            raise ValueError("half_life_sessions must be positive")
        if self.max_live_sessions < 1 or self.max_workflows < 1:
            raise ValueError("max_live_sessions and max_workflows must be >= 1")


@dataclass(frozen=True, slots=True)
class OutputBound:
    """Distribution-free output-length summary of one agent.

    ``bound_tokens`` is an upper bound on the ``quantile`` of the output length that
    holds with probability ``confidence`` (an order statistic of the latest samples);
    None when there are too few samples to say ("no bound").
    """

    samples: int
    mean_tokens: float
    median_tokens: float
    bound_tokens: int | None
    quantile: float
    confidence: float


@dataclass(frozen=True, slots=True)
class PrefixPrediction:
    """The prefix the next call of an agent is expected to start with.

    ``kind`` names the segment: "history" (this agent's previous prompt in the session),
    "shared" (the session's previous call's prompt), "role" (the agent's prompt that
    recurs across sessions) or "none".
    """

    kind: str
    block_hashes: tuple[int, ...] = ()
    tokens: int = 0
    expected_hit_fraction: float = 0.0


@dataclass(frozen=True, slots=True)
class Prediction:
    """What the profiler expects of one live session; reactive defaults in shadow mode.

    ``next_agents`` is the distribution of the agent of the next step (``END`` when the
    session finishes), most likely first. Work is in output tokens along the critical
    path (a parallel fan-out counts once, by its longest branch).
    """

    workflow: str | None
    session: str | None
    agent: str | None
    mode: str  # "proactive", "shadow" or "unknown"
    next_agents: tuple[tuple[str, float], ...] = ()
    expected_remaining_steps: float | None = None
    expected_remaining_work_tokens: float | None = None
    output_bound_tokens: int | None = None
    next_arrival_s: float | None = None
    expected_fanout: float = 1.0
    prefix: PrefixPrediction = PrefixPrediction("none")
    reason: str = ""

    @property
    def proactive(self) -> bool:
        return self.mode == "proactive"

    @property
    def next_agent(self) -> str | None:
        return self.next_agents[0][0] if self.next_agents else None


@dataclass(frozen=True, slots=True)
class ModeState:
    """A workflow type's standing, with the figures it was judged on."""

    mode: str
    sessions_judged: int
    next_agent_top1: float | None
    bound_coverage: float | None
    promotions: int = 0
    demotions: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class WorkflowSnapshot:
    """Everything a report shows about one workflow type."""

    workflow: str
    sessions_learned: int
    calls_learned: int
    mode: ModeState
    context_model: str
    model_scores: dict[str, float]
    regex: str
    edges: tuple[tuple[str, str, float], ...]
    agents: dict[str, OutputBound]
    delays_s: dict[str, tuple[float, float]]  # "a -> b": (median, p90)
    prefixes: dict[str, dict[str, float]]
    fanout: dict[str, float]


@dataclass(frozen=True, slots=True)
class ProfilerSnapshot:
    live_sessions: int
    dropped_observations: int
    workflows: tuple[WorkflowSnapshot, ...] = field(default_factory=tuple)
