"""Sampling and bookkeeping shared by the workload generators.

Distributions are empirical: a :class:`QuantileTable` holds measured quantiles and samples
by inverse CDF with linear interpolation, so a generator reproduces the source's shape
(heavy tails included) without assuming a parametric family.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pythia_server.replay.blocks import HashIdAllocator, SharedPrefixes, extend_prompt
from pythia_server.replay.workload import WorkloadRequest

__all__ = ["Conversation", "QuantileTable", "SessionBuilder", "build_sessions"]


@dataclass(frozen=True, slots=True)
class QuantileTable:
    """Values at cumulative probabilities ``probs`` (0 and 1 included, increasing)."""

    probs: tuple[float, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.probs) != len(self.values) or len(self.probs) < 2:
            raise ValueError("probs and values must have the same length, at least 2")
        if (
            self.probs[0] != 0.0
            or self.probs[-1] != 1.0
            or list(self.probs) != sorted(self.probs)
        ):
            raise ValueError("probs must rise from 0 to 1")
        if list(self.values) != sorted(self.values):
            raise ValueError("values must be non-decreasing")

    @classmethod
    def percentiles(
        cls, percents: Sequence[float], values: Sequence[float]
    ) -> QuantileTable:
        return cls(tuple(p / 100.0 for p in percents), tuple(float(v) for v in values))

    @classmethod
    def constant(cls, value: float) -> QuantileTable:
        return cls((0.0, 1.0), (float(value), float(value)))

    def sample(self, rng: random.Random) -> float:
        u = rng.random()
        i = max(1, bisect.bisect_right(self.probs, u))
        i = min(i, len(self.probs) - 1)
        p0, p1 = self.probs[i - 1], self.probs[i]
        v0, v1 = self.values[i - 1], self.values[i]
        return v0 if p1 == p0 else v0 + (v1 - v0) * (u - p0) / (p1 - p0)

    def scaled(self, factor: float) -> QuantileTable:
        return QuantileTable(self.probs, tuple(v * factor for v in self.values))


@dataclass(slots=True)
class Conversation:
    """One agent's growing chat: the prompt ids of its last call and their length."""

    tokens: int = 0
    hash_ids: tuple[int, ...] = ()


@dataclass(slots=True)
class SessionBuilder:
    """Collects one session's calls; ids are ``{session}:{agent}:{n}``."""

    session_id: str
    workflow_type: str
    block_size: int
    allocator: HashIdAllocator
    shared: SharedPrefixes
    requests: list[WorkloadRequest] = field(default_factory=list)
    _counts: dict[str, int] = field(default_factory=dict)

    def prompt(
        self,
        conversation: Conversation,
        shared_tokens: int,
        input_length: int,
        base: tuple[int, ...] | None = None,
    ) -> tuple[int, ...]:
        """Ids for the next prompt of ``conversation``: its first ``shared_tokens`` tokens
        repeat ``base`` (default: the conversation's previous prompt)."""
        prefix = conversation.hash_ids if base is None else base
        ids = extend_prompt(
            prefix, shared_tokens, input_length, self.block_size, self.allocator
        )
        conversation.tokens, conversation.hash_ids = input_length, ids
        return ids

    def call(
        self,
        agent: str,
        *,
        input_length: int,
        output_length: int,
        hash_ids: tuple[int, ...],
        wait_for: Sequence[str] = (),
        delay_ms: float | None = None,
        tool_wait_ms: float | None = None,
        parent_agent: str | None = None,
        phase: str | None = None,
    ) -> str:
        n = self._counts.get(agent, 0)
        self._counts[agent] = n + 1
        request_id = f"{self.session_id}:{agent}:{n}"
        root = not wait_for
        self.requests.append(
            WorkloadRequest(
                request_id=request_id,
                session_id=self.session_id,
                workflow_type=self.workflow_type,
                agent=agent,
                parent_agent=parent_agent,
                phase=phase,
                timestamp_ms=0.0 if root else None,
                delay_ms=None if root else round(delay_ms or 0.0, 3),
                tool_wait_ms=None
                if root or tool_wait_ms is None
                else round(tool_wait_ms, 3),
                wait_for=tuple(wait_for),
                input_length=max(1, int(input_length)),
                output_length=max(1, int(output_length)),
                hash_ids=hash_ids,
                block_size=self.block_size,
            )
        )
        return request_id


def build_sessions(
    sessions: int,
    seed: int,
    *,
    id_prefix: str,
    workflow_type: str,
    block_size: int,
    session: Callable[[SessionBuilder, random.Random], None],
) -> list[WorkloadRequest]:
    """Run ``session`` once per session, all drawing from one ``random.Random(seed)`` and
    one hash-id space (so role prompts shared across sessions get the same ids); session
    ids are ``{id_prefix}-{seed}-{index}``."""
    rng = random.Random(seed)
    allocator = HashIdAllocator()
    shared = SharedPrefixes(allocator, block_size)
    out: list[WorkloadRequest] = []
    for index in range(sessions):
        builder = SessionBuilder(
            f"{id_prefix}-{seed}-{index}", workflow_type, block_size, allocator, shared
        )
        session(builder, rng)
        out.extend(builder.requests)
    return out
