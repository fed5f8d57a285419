"""What an offline replay takes (``ReplayConfig``) and returns: one record per call and per session."""

from __future__ import annotations

from dataclasses import dataclass, field

from pythia_server.engine.types import EngineConfig

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

    def __post_init__(self) -> None:
        if self.replicas <= 0:
            raise ValueError("replicas must be positive")
        if self.block_size <= 0:
            raise ValueError("block_size must be positive")
        if self.concurrency is not None and self.concurrency <= 0:
            raise ValueError("concurrency must be positive")


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
    replicas: int
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
