"""The gateway's configuration: built once at start-up, frozen, passed down.

Nothing reads ``os.environ`` at import; :meth:`GatewayConfig.from_env` reads the
documented variables once, and command-line options override them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

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
    router: str = "round_robin"
    #: Request bodies above this are refused with 413, checked while reading.
    max_body_bytes: int = 32 * 1024 * 1024
    #: Calls in flight above this are refused with 429.
    max_inflight_requests: int = 4096
    upstream_connect_timeout_s: float = 5.0
    #: Longest silence between two reads of an upstream response (a stalled replica).
    upstream_read_timeout_s: float = 300.0
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

    def __post_init__(self) -> None:
        if self.block_size <= 0:
            raise ValueError("block_size must be positive")
        if self.max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be positive")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} out of range")

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
                values[f.name] = kind(raw)
            except ValueError:
                raise ValueError(f"{ENV_PREFIX}{f.name.upper()}={raw!r} is not a valid {kind.__name__}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_changes(self, **changes: Any) -> GatewayConfig:
        return replace(self, **changes)
