"""One call's state while the gateway serves it, and what it becomes when it ends.

A call ends in exactly one stored :class:`CallRecord` and, when it reached a replica, one
:class:`CallOutcome` for the policies; both are built here from the same state so the
report and the policies never disagree about a call's times or tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pythia_sdk.protocol import AgentTags, Hints
from pythia_server.gateway.accounting import Usage
from pythia_server.gateway.validation import ParsedRequest
from pythia_server.policy.types import CallInfo, CallOutcome
from pythia_server.store.records import CallRecord

__all__ = ["ServedCall", "call_outcome", "call_record"]


@dataclass(slots=True)
class ServedCall:
    """One call's mutable state while it is served."""

    call_id: str
    parsed: ParsedRequest
    tags: AgentTags
    hints: Hints
    info: CallInfo
    started_wall: float
    started: float  # perf_counter seconds
    replica_id: str | None = None
    reserved_tokens: int = 0
    sent: float | None = None
    first_content: float | None = None
    usage: Usage = field(default_factory=Usage)
    status: str = "ok"
    error: str | None = None
    done: bool = False
    assembled: bool = False  # a non-streaming answer built from an upstream stream

    def queue_ms(self) -> float | None:
        """Gateway queue (until sent) plus the engine's own queue when it reports it."""
        if self.sent is None:
            return None
        queue_ms = (self.sent - self.started) * 1000.0
        if self.usage.engine_queue_ms is not None:
            queue_ms += self.usage.engine_queue_ms
        return queue_ms


def call_record(call: ServedCall, now: float, block_size: int) -> CallRecord:
    """The stored record of a call that ended at ``now`` (perf_counter seconds)."""
    usage = call.usage
    status = call.status
    ttft_ms = (call.first_content - call.started) * 1000.0 if call.first_content is not None else None
    e2e_ms = (now - call.started) * 1000.0
    prompt_tokens = usage.prompt_tokens if usage.prompt_tokens is not None else call.info.prompt_tokens
    tags = call.tags
    return CallRecord(
        call_id=call.call_id, workflow=tags.workflow, session=tags.session, agent=tags.agent,
        parent=tags.parent, call_tag=tags.call, model=call.parsed.model, replica=call.replica_id,
        route=call.parsed.route, stream=call.parsed.stream, prompt_tokens=prompt_tokens,
        cached_tokens=usage.cached_tokens, output_tokens=usage.output_tokens,
        queue_ms=call.queue_ms(), ttft_ms=ttft_ms, e2e_ms=e2e_ms,
        finish_reason=usage.finish_reason if status == "ok" else (usage.finish_reason or status),
        status=status, error=call.error, started_at=call.started_wall,
        finished_at=call.started_wall + e2e_ms / 1000.0, block_size=block_size,
        block_hashes=call.info.block_hashes)


def call_outcome(call: ServedCall, now: float, policy_time: Callable[[float], float]) -> CallOutcome:
    """One ``CallOutcome`` for the bundle (times from the gateway's view; see driver.py)."""
    usage = call.usage
    e2e_s = now - call.started
    if usage.engine_queue_ms is not None:
        queue_s = usage.engine_queue_ms / 1000.0
    else:
        queue_s = (call.sent - call.started) if call.sent is not None else 0.0
    tool_call = True if usage.finish_reason == "tool_calls" else None
    return CallOutcome(
        call=call.info, replica_id=call.replica_id or "", ok=call.status == "ok",
        prompt_tokens=usage.prompt_tokens if usage.prompt_tokens is not None else call.info.prompt_tokens,
        cached_tokens=usage.cached_tokens or 0, output_tokens=usage.output_tokens or 0,
        queue_s=queue_s, service_s=max(e2e_s - queue_s, 0.0),
        finished_s=policy_time(call.started_wall + e2e_s),
        ends_with_tool_call=tool_call)
