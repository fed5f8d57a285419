"""What an offline replay takes (``ReplayConfig``) and returns: one record per call and per session."""

from __future__ import annotations

from dataclasses import dataclass, field

from pythia_server.engine.types import EngineConfig
from pythia_server.replay.scaling import ReplicaSpan, ScaleRecord

__all__ = ["ReplayConfig", "ReplayResult", "RequestResult", "SessionResult"]


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    """How to run: replica count, their SGLang config, the gateway's block size, admission."""

    replicas: int = 1
    engine: EngineConfig = field(default_factory=EngineConfig.from_gpu)
    block_size: int = 64  # tokens per CallInfo.block_hashes entry (the gateway's --block-size)
    concurrency: int | None = None  # closed loop of C sessions; None = ready times from the file
    max_decode_steps: int = 4096
    prefetch: bool = True  # realise cache-hint prefetches as prefill-only requests
    #: re-ask the priority policy for waiting calls this often (virtual s; ageing and
    #: anti-starvation); None = ask once at submission, as a gateway in front of SGLang can
    reprioritize_every_s: float | None = 1.0
    cold_start_s: float = 30.0  # a replica the bundle's scaler adds serves this long after launch

    def __post_init__(self) -> None:
        if self.replicas <= 0:
            raise ValueError("replicas must be positive")
        if self.block_size <= 0:
            raise ValueError("block_size must be positive")
        if self.concurrency is not None and self.concurrency <= 0:
            raise ValueError("concurrency must be positive")
        if self.reprioritize_every_s is not None and self.reprioritize_every_s <= 0:
            raise ValueError("reprioritize_every_s must be positive (or None)")
        if self.cold_start_s < 0:
            raise ValueError("cold_start_s must not be negative")


@dataclass(frozen=True, slots=True)
class RequestResult:
    """One workload call as served; times in virtual seconds."""

    request_id: str
    session: str
    workflow: str | None
    agent: str | None
    replica_id: str
    route_reason: str
    priority: int | None
    ready_s: float  # when it reached the gateway (= the engine: no gateway latency offline)
    first_token_s: float | None
    finish_s: float
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    retractions: int
    finish_reason: str

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_s is None else self.first_token_s - self.ready_s

    @property
    def e2e_s(self) -> float:
        return self.finish_s - self.ready_s


@dataclass(frozen=True, slots=True)
class SessionResult:
    session: str
    workflow: str | None
    start_s: float  # its first call ready
    end_s: float  # its last call finished
    calls: int

    @property
    def jct_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True, slots=True)
class ReplayResult:
    policy: str
    replicas: int  # at the start (a scaler may change the count: see replica_spans)
    requests: tuple[RequestResult, ...]
    sessions: tuple[SessionResult, ...]
    end_s: float  # virtual time when the last event ran
    busy_s: dict[str, float]  # per replica: virtual time spent stepping
    retractions: int  # decode-time retractions under KV pressure, all replicas
    preemptions: int  # running requests displaced by more urgent ones, all replicas
    prefetches_sent: int = 0
    prefetches_dropped: int = 0  # no room on the replica, or nothing the driver could rebuild
    prefetches_resident: int = 0  # already cached: nothing sent
    rejected: tuple[str, ...] = ()  # "request id: reason" of calls the engine refused (SGLang's 400)
    events: int = 0
    replica_spans: tuple[ReplicaSpan, ...] = ()  # every replica's launch, serving and removal times
    peak_replicas: int = 0  # most replicas up at once (serving, starting or draining)
    scale_log: tuple[ScaleRecord, ...] = ()  # the scaler's ticks as acted on (empty: fixed pool)
    reprioritized: int = 0  # waiting calls whose priority the driver changed after submission
