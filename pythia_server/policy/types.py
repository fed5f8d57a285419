"""The small frozen values that policies take and return, and the policy protocols."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pythia_sdk.protocol import AgentTags, Hints


@dataclass(frozen=True, slots=True)
class CallInfo:
    """One LLM call as a policy sees it: who made it and how big it is."""

    call_id: str
    tags: AgentTags
    prompt_tokens: int
    block_hashes: tuple[int, ...] = ()  # chained hashes of the prompt's full KV blocks
    max_tokens: int | None = None
    hints: Hints = Hints()
    arrival_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """One replica's state at decision time, as the driver last observed it."""

    replica_id: str
    healthy: bool = True
    running_requests: int = 0
    queued_requests: int = 0
    outstanding_tokens: int = 0  # prompt + max output tokens of requests not finished
    free_kv_tokens: int = 0
    total_kv_tokens: int = 0
    cached_prefix_tokens: int = 0  # this call's prompt tokens the driver believes are cached there


@dataclass(frozen=True, slots=True)
class RouteDecision:
    replica_id: str
    reason: str


@runtime_checkable
class Router(Protocol):
    """Chooses the replica for a call. Pure: no I/O, no clock reads."""

    name: str

    def route(self, call: CallInfo, replicas: Sequence[ReplicaView], now_s: float) -> RouteDecision:
        """Pick one of ``replicas`` (all healthy ones are candidates; never empty)."""
        ...

    def on_finish(self, call: CallInfo, replica_id: str, now_s: float) -> None:
        """Told when a call routed by this router has finished (or failed)."""
        ...
