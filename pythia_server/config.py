"""The gateway's configuration: built once at start-up, frozen, passed down.

Nothing reads ``os.environ`` at import; :meth:`GatewayConfig.from_env` reads the
documented variables once, and command-line options override them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from pythia_server.profiler.types import ProfilerConfig

__all__ = ["ENV_PREFIX", "GatewayConfig"]

#: Environment variables are ``PYTHIA_`` plus the upper-cased field name,
#: e.g. ``PYTHIA_DB_PATH``, ``PYTHIA_BLOCK_SIZE``, ``PYTHIA_SESSION_IDLE_TIMEOUT_S``.
ENV_PREFIX = "PYTHIA_"


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything the gateway, its pool and its store need to know."""

    host: str = "127.0.0.1"
    port: int = 8000
    #: SQLite file for call and session records.
    db_path: str = "pythia.db"
    #: Tokens per prefix block hashed for each call (SGLang's page / KV-event block size).
    block_size: int = 64
    #: The policy bundle the gateway drives (``make_policy``: sglang, kvflow, continuum, pythia, ...).
    policy: str = "pythia"
    #: Overrides the bundle's router by name (``make_router``); empty: the bundle's own.
    router: str = ""
    #: Request bodies above this are refused with 413, checked while reading.
    max_body_bytes: int = 32 * 1024 * 1024
    #: Calls in flight above this are refused with 429.
    max_inflight_requests: int = 4096
    upstream_connect_timeout_s: float = 5.0
    #: Longest wait from sending a call to the first byte of its answer's body (a hung replica:
    #: the call is retried elsewhere, or answered 504, and the replica quarantined).
    upstream_first_byte_timeout_s: float = 300.0
    #: Longest silence between two chunks of an upstream answer after its first (a stalled replica).
    upstream_read_timeout_s: float = 300.0
    #: A quarantined replica is re-probed after this, doubled per strike up to the max.
    quarantine_base_s: float = 5.0
    quarantine_max_s: float = 300.0
    upstream_pool_size: int = 256
    #: How often replicas are probed on /health (unhealthy ones come back when it passes).
    health_interval_s: float = 2.0
    health_timeout_s: float = 2.0
    #: A session with no call for this long is ended (its JCT becomes final).
    session_idle_timeout_s: float = 600.0
    #: Distinct workflow label values in /metrics; the rest are reported as "other".
    max_workflow_labels: int = 50
    #: Store writes are batched: at most this many rows or this long before a commit.
    store_batch_rows: int = 512
    store_flush_interval_s: float = 0.1
    #: Distinct (workflow, agent) label pairs in the per-agent /metrics series; the rest are "other".
    max_agent_labels: int = 200
    #: Answer non-streaming calls from an upstream stream, so every call has a TTFT.
    assemble_from_stream: bool = True
    #: Learn each workflow type (the profiler, fed off the request path).
    profiler_enabled: bool = True
    #: Output-length bound: quantile and confidence of the distribution-free bound.
    profiler_quantile: float = 0.9
    profiler_confidence: float = 0.9
    #: Shadow -> proactive once this many sessions were judged at these accuracies.
    profiler_min_sessions: int = 8
    profiler_promote_top1: float = 0.7
    profiler_promote_coverage: float = 0.85
    #: How often the profiler's accuracy is sampled into the report's history.
    profiler_history_interval_s: float = 30.0

    def __post_init__(self) -> None:
        if self.block_size <= 0:
            raise ValueError("block_size must be positive")
        if self.max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be positive")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} out of range")
        for name in ("profiler_quantile", "profiler_confidence"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        for name in ("profiler_promote_top1", "profiler_promote_coverage"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.profiler_min_sessions < 1:
            raise ValueError("profiler_min_sessions must be at least 1")
        for name in ("upstream_first_byte_timeout_s", "upstream_read_timeout_s", "quarantine_base_s",
                     "quarantine_max_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.profiler_history_interval_s <= 0:
            raise ValueError("profiler_history_interval_s must be positive")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> GatewayConfig:
        """Defaults, then ``PYTHIA_*`` variables, then ``overrides`` (None means unset)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            kind = type(getattr(cls(), f.name))
            try:
                values[f.name] = _parse_bool(raw) if kind is bool else kind(raw)
            except ValueError:
                raise ValueError(f"{ENV_PREFIX}{f.name.upper()}={raw!r} is not a valid {kind.__name__}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def profiler_config(self) -> ProfilerConfig:
        """The profiler's own small config, from the ``profiler_*`` fields."""
        return ProfilerConfig(bound_quantile=self.profiler_quantile, bound_confidence=self.profiler_confidence,
                              min_validation_sessions=self.profiler_min_sessions,
                              promote_top1=self.profiler_promote_top1,
                              promote_coverage=self.profiler_promote_coverage)

    def with_changes(self, **changes: Any) -> GatewayConfig:
        return replace(self, **changes)


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)
