"""Claude Code call logs (``claude_code_calls.jsonl``) to the workload format.

Assumptions, each also in docs/workloads.md:

1. **Sessions and agents.** ``session`` is the session, ``workflow_type`` is
   ``"claude_code"``, ``agent`` is ``agent_type`` (``main``, ``Explore``,
   ``general-purpose``, ``Plan``); a sub-agent's own id (``agent``) is kept as the row's
   ``agent_instance`` and its ``parent_agent`` is ``main``. A call lasts from ``t`` to
   ``t + api_time`` (seconds from session start); where ``api_time`` is missing (streamed
   calls) it ends at the instance's next ``t - think_time``, or at ``t`` for its last call.
2. **Dependencies** (the rules of Dynamo's own agent-trace converter,
   ``agent_trace_to_mooncake``): each agent instance is sequential (a call waits for the
   instance's previous call); a sub-agent's first call also waits for the latest ``main``
   call that ended before it started (its spawner; ``spawn_slack_s``, default 1 s, absorbs
   the source's approximate sub-agent start times); the first ``main`` call that starts
   after a sub-agent's last call ended waits for that call (the join). A sub-agent with no
   spawner is a root at its recorded start.
3. **Gaps.** With one dependency on the same instance the wait is ``think_time``; otherwise
   it is ``start - latest dependency end`` (never negative). After a call that stopped with
   ``tool_use`` the wait is tool time (``tool_wait_ms``); after ``end_turn`` or an empty
   ``stop`` it is user / client time (``delay``).
4. **Prefixes.** The first ``system_tokens + tool_tokens`` tokens of a call are shared by
   every call, in every session, with the same ``agent_type``, ``system_tokens`` and
   ``tool_tokens`` (equal sizes taken as the same Claude Code version and prompt; the
   source scoped block hashes per session, so cross-session sharing is not recorded). Inside
   a session a call reuses the first ``prefix_hit_blocks`` 64-token blocks of the earlier
   call it matched: the instance's previous call when ``prev_same_agent_lcp`` accounts for
   the whole hit, else the latest earlier call of the session long enough to hold it.
5. **Context size.** Contexts are Claude-sized (median ~100k tokens). Outputs are capped at
   ``max_output_tokens`` (default 8192). Then, with ``context_policy="scale"`` (default),
   every token count of a session's prompts (input, system, tools, shared blocks) is
   multiplied by one factor per session, the largest ``f <= 1`` with
   ``f * input + output <= max_context`` (default 32768) for all its calls, so the growth
   pattern and reuse ratios of a session are kept; with ``"drop"`` sessions with a call
   over ``max_context`` are left out instead.
6. **Arrivals.** Sessions carry no absolute start time: every session starts at 0. Re-time
   them with an arrival process (``pythia-server workload convert ... --rate R``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from pythia_server.replay.blocks import HashIdAllocator, SharedPrefixes, extend_prompt
from pythia_server.replay.workload import (
    WorkloadError,
    WorkloadRequest,
    json_lines,
    ms_from_s,
)

__all__ = ["ClaudeCodeOptions", "convert_claude_code", "read_claude_code"]

WORKFLOW_TYPE = "claude_code"
SOURCE_BLOCK_TOKENS = 64
MAIN = "main"
_REQUIRED = ("session", "agent", "agent_type", "idx", "t", "in", "out", "n_blocks")


@dataclass(frozen=True, slots=True)
class ClaudeCodeOptions:
    block_size: int = 64
    max_context: int = 32768
    max_output_tokens: int = 8192
    context_policy: str = "scale"  # "scale" or "drop"
    spawn_slack_s: float = 1.0


@dataclass(frozen=True, slots=True)
class _Call:
    row: dict[str, Any]
    request_id: str
    start_s: float
    end_s: float


def read_claude_code(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a Claude Code calls file, each checked for the fields the converter reads."""
    path = Path(path)
    rows: list[dict[str, Any]] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, row in json_lines(path, lines):
        missing = [
            n for n in _REQUIRED if not isinstance(row, dict) or row.get(n) is None
        ]
        if missing:
            raise WorkloadError(
                f"{path}:{number}: Claude Code row is missing {', '.join(missing)}"
            )
        rows.append(row)
    if not rows:
        raise WorkloadError(f"{path}: no Claude Code calls")
    return rows


def convert_claude_code(
    rows: Iterable[dict[str, Any]], options: ClaudeCodeOptions | None = None
) -> list[WorkloadRequest]:
    options = options or ClaudeCodeOptions()
    if options.context_policy not in ("scale", "drop"):
        raise WorkloadError(
            f"context_policy must be 'scale' or 'drop', not {options.context_policy!r}"
        )
    sessions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        sessions[str(row["session"])].append(row)
    allocator = HashIdAllocator()
    shared = SharedPrefixes(allocator, options.block_size)
    out: list[WorkloadRequest] = []
    for session_id, session_rows in sessions.items():
        factor = _scale_factor(session_rows, options)
        if factor is None:
            continue
        out.extend(
            _convert_session(
                session_id, session_rows, factor, options, allocator, shared
            )
        )
    if not out:
        raise WorkloadError(f"no session fits max_context {options.max_context}")
    return out


def _output_tokens(row: dict[str, Any], options: ClaudeCodeOptions) -> int:
    return min(int(row["out"]), options.max_output_tokens)


def _scale_factor(
    rows: list[dict[str, Any]], options: ClaudeCodeOptions
) -> float | None:
    """Largest factor <= 1 that fits every call, or None when the session is dropped."""
    factor = 1.0
    for row in rows:
        room = options.max_context - _output_tokens(row, options)
        need = int(row["in"])
        if need <= room:
            continue
        if options.context_policy == "drop" or room <= 0:
            return None
        factor = min(factor, room / need)
    return factor


def _convert_session(
    session_id: str,
    rows: list[dict[str, Any]],
    factor: float,
    options: ClaudeCodeOptions,
    allocator: HashIdAllocator,
    shared: SharedPrefixes,
) -> list[WorkloadRequest]:
    by_instance: dict[str, list[_Call]] = defaultdict(list)
    instance_rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: (str(r["agent"]), int(r["idx"]))):
        instance_rows[str(row["agent"])].append(row)
    for instance, calls_rows in instance_rows.items():
        for position, row in enumerate(calls_rows):
            following = (
                calls_rows[position + 1] if position + 1 < len(calls_rows) else None
            )
            start_s = float(row["t"])
            request_id = f"{session_id}:{row['agent']}:{row['idx']}"
            by_instance[instance].append(
                _Call(row, request_id, start_s, _end_s(row, following))
            )
    wait_for: dict[str, list[str]] = defaultdict(list)
    for calls in by_instance.values():
        for before, after in pairwise(calls):
            wait_for[after.request_id].append(before.request_id)
    mains = by_instance.get(MAIN, [])
    for instance, calls in by_instance.items():
        if instance == MAIN:
            continue
        first, last = calls[0], max(calls, key=lambda c: (c.end_s, c.start_s))
        spawners = [
            m for m in mains if m.end_s <= first.start_s + options.spawn_slack_s
        ]
        if spawners:
            wait_for[first.request_id].append(
                max(spawners, key=lambda m: m.end_s).request_id
            )
        joiners = [m for m in mains if m.start_s >= last.end_s]
        if joiners:
            joiner = min(joiners, key=lambda m: m.start_s).request_id
            if last.request_id not in wait_for[joiner]:
                wait_for[joiner].append(last.request_id)
    everything = sorted(
        (c for calls in by_instance.values() for c in calls),
        key=lambda c: (c.start_s, c.request_id),
    )
    by_id = {c.request_id: c for c in everything}
    ids_of: dict[str, tuple[int, ...]] = {}
    previous_in_instance: dict[str, _Call] = {}
    out: list[WorkloadRequest] = []
    for position, call in enumerate(everything):
        row = call.row
        instance = str(row["agent"])
        input_length = max(1, round(int(row["in"]) * factor))
        hash_ids = _prompt_ids(
            call,
            everything,
            position,
            previous_in_instance.get(instance),
            ids_of,
            input_length,
            factor,
            options,
            allocator,
            shared,
        )
        ids_of[call.request_id] = hash_ids
        deps = tuple(wait_for.get(call.request_id, ()))
        delay_ms, tool_wait_ms = _wait(
            call, deps, by_id, previous_in_instance.get(instance)
        )
        previous_in_instance[instance] = call
        agent_type = str(row["agent_type"])
        out.append(
            WorkloadRequest(
                request_id=call.request_id,
                session_id=session_id,
                workflow_type=WORKFLOW_TYPE,
                agent=agent_type,
                parent_agent=None if instance == MAIN else MAIN,
                timestamp_ms=ms_from_s(call.start_s),
                delay_ms=delay_ms,
                tool_wait_ms=tool_wait_ms,
                wait_for=deps,
                input_length=input_length,
                output_length=_output_tokens(row, options),
                hash_ids=hash_ids,
                block_size=options.block_size,
                extra={} if instance == MAIN else {"agent_instance": instance},
            )
        )
    return out


def _end_s(row: dict[str, Any], following: dict[str, Any] | None) -> float:
    """``t + api_time``; without ``api_time`` (streamed calls), the next call of the same
    instance minus its ``think_time``, else the start itself."""
    start_s = float(row["t"])
    if row.get("api_time") is not None:
        return start_s + float(row["api_time"])
    if following is not None and following.get("think_time") is not None:
        return max(start_s, float(following["t"]) - float(following["think_time"]))
    return start_s


def _prompt_ids(
    call: _Call,
    ordered: list[_Call],
    position: int,
    previous: _Call | None,
    ids_of: dict[str, tuple[int, ...]],
    input_length: int,
    factor: float,
    options: ClaudeCodeOptions,
    allocator: HashIdAllocator,
    shared: SharedPrefixes,
) -> tuple[int, ...]:
    row = call.row
    system_tokens = int(row.get("system_tokens") or 0) + int(
        row.get("tool_tokens") or 0
    )
    scaled_system = min(input_length, round(system_tokens * factor))
    prefix_key = (
        str(row["agent_type"]),
        row.get("system_tokens"),
        row.get("tool_tokens"),
    )
    hit_blocks = int(row.get("prefix_hit_blocks") or 0)
    source: _Call | None = None
    if hit_blocks > 0:
        if (
            previous is not None
            and int(row.get("prev_same_agent_lcp") or 0) >= hit_blocks
        ):
            source = previous
        else:
            source = next(
                (
                    c
                    for c in reversed(ordered[:position])
                    if int(c.row["n_blocks"]) >= hit_blocks
                ),
                previous,
            )
    hit_tokens = round(hit_blocks * SOURCE_BLOCK_TOKENS * factor)
    if source is not None and hit_tokens >= scaled_system:
        return extend_prompt(
            ids_of[source.request_id],
            hit_tokens,
            input_length,
            options.block_size,
            allocator,
        )
    system_ids = shared.blocks(prefix_key, scaled_system)
    return extend_prompt(
        system_ids, scaled_system, input_length, options.block_size, allocator
    )


def _wait(
    call: _Call, deps: tuple[str, ...], by_id: dict[str, _Call], previous: _Call | None
) -> tuple[float | None, float | None]:
    """(delay_ms, tool_wait_ms) after the last dependency ends; (None, None) for a root."""
    if not deps:
        return None, None
    if (
        previous is not None
        and deps == (previous.request_id,)
        and call.row.get("think_time") is not None
    ):
        gap_s = max(0.0, float(call.row["think_time"]))
    else:
        gap_s = max(0.0, call.start_s - max(by_id[d].end_s for d in deps))
    after = (
        previous
        if previous is not None and previous.request_id in deps
        else by_id[deps[0]]
    )
    if after.row.get("stop") == "tool_use":
        return 0.0, ms_from_s(gap_s)
    return ms_from_s(gap_s), None
