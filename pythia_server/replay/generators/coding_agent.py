"""Coding-agent loop: a main agent calling tools in a loop, occasionally spawning sub-agents.

Calibrated to ``shared/workloads/claude_code_calls.jsonl`` (350 Claude Code sessions,
25,226 calls; callanjfox/kv-cache-tester, Apache-2.0). Every table below is the file's
empirical quantiles at percentiles 0, 5, 10, 25, 50, 75, 90, 95, 99, 100
(:func:`calibrate` recomputes them from the file; a test keeps the two in step):

- main calls per session; the first prompt beyond system + tools; per-call prompt growth
  (``in`` difference between consecutive main calls, non-negative ones); output tokens;
  wait before the next call after a ``tool_use`` stop (tool time) and after ``end_turn``
  (user time); ``P(end_turn)`` = 0.0575.
- system + tool schema tokens: 14,992 (median over sessions), shared by every session.
- sub-agents: 16 spawn events in 24,989 main calls (rate 6.4e-4 per call), 1-3 parallel
  instances per spawn (9 x 1, 5 x 2, 2 x 3), of type ``Explore``; their calls per instance,
  first prompt (system + tools ~8,500), growth, output and think tables.

Context scaling: Claude contexts (median ~100k) do not fit an 8B model on one H100, so all
prompt sizes are multiplied by ``context_scale`` (default 0.25: median first prompt ~6k,
median call ~21k, like the converter's per-session scaling to 32k). When a prompt would
exceed ``max_context - output``, the agent *compacts*, as Claude Code does near its limit:
the next prompt is system + ``compact_tokens`` of summary, sharing only the system prefix.
Outputs are capped at ``max_output_tokens``.

Structure: main calls are sequential; a spawning main call is followed by its sub-agents'
first calls (``wait_for`` it, no delay); the next main call waits for the main call and for
every sub-agent's last call (parallel branches joined). Each agent's prompt extends its
previous prompt (whole blocks of it reused).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from pythia_server.replay.generators._common import (
    Conversation,
    QuantileTable,
    SessionBuilder,
    build_sessions,
)
from pythia_server.replay.workload import WorkloadRequest

__all__ = ["CodingAgentParams", "calibrate", "generate_coding_agent"]

WORKFLOW_TYPE = "coding_agent"
PERCENTS = (0, 5, 10, 25, 50, 75, 90, 95, 99, 100)


def _table(values: tuple[float, ...]) -> QuantileTable:
    return QuantileTable.percentiles(PERCENTS, values)


# Measured from claude_code_calls.jsonl (see the module docstring and calibrate()).
MAIN_CALLS = _table((3, 5, 8, 21, 48, 98, 153, 232, 350, 514))
FIRST_EXTRA_TOKENS = _table(
    (129, 495, 1183, 3675, 7123, 92194, 263710, 400766, 784130, 837120)
)
GROWTH_TOKENS = _table((14, 154, 189, 332, 661, 1556, 3588, 6268, 16321, 636943))
OUTPUT_TOKENS = _table((0, 87, 103, 136, 217, 432, 912, 1534, 3781, 18195))
TOOL_WAIT_S = _table((0, 3, 4, 5, 9, 19, 70, 147, 608, 27010))
USER_WAIT_S = _table((2, 8, 17, 39, 122, 400, 1666, 3161, 11220, 52588))
P_END_TURN = 0.0575
SYSTEM_TOKENS = 14992
SPAWN_RATE = 16 / 24989
PARALLEL_SUBAGENTS = QuantileTable(
    (0.0, 9 / 16, 9 / 16, 14 / 16, 14 / 16, 1.0), (1, 1, 2, 2, 3, 3)
)
SUB_CALLS = _table((4, 4, 4, 7, 10, 12, 16, 17, 17, 17))
SUB_SYSTEM_TOKENS = 8509
SUB_FIRST_EXTRA_TOKENS = 1823  # median first sub-agent prompt 10,332 - system 8,509
SUB_GROWTH_TOKENS = _table(
    (185, 429, 570, 1181, 3204, 6555, 15588, 29473, 58912, 65010)
)
SUB_OUTPUT_TOKENS = _table((80, 119, 133, 173, 233, 299, 1042, 2864, 5083, 9829))
SUB_WAIT_S = _table((1, 2, 3, 3, 4, 8, 32, 42, 118, 124))


@dataclass(frozen=True, slots=True)
class CodingAgentParams:
    context_scale: float = 0.25
    max_context: int = 32768
    max_output_tokens: int = 4096
    compact_tokens: int = 2048
    spawn_rate: float = SPAWN_RATE
    subagent_type: str = "Explore"
    block_size: int = 64
    main_calls: QuantileTable = field(default=MAIN_CALLS)
    wait_scale: float = (
        1.0  # multiply recorded tool / user waits (0 for back-to-back calls)
    )


def generate_coding_agent(
    sessions: int, seed: int = 0, params: CodingAgentParams | None = None
) -> list[WorkloadRequest]:
    """``sessions`` coding-agent sessions, all starting at 0 (apply an arrival process)."""
    params = params or CodingAgentParams()
    if (
        sessions <= 0
        or params.context_scale <= 0
        or params.max_context <= params.max_output_tokens
    ):
        raise ValueError(
            "need sessions > 0, context_scale > 0 and max_context > max_output_tokens"
        )
    return build_sessions(
        sessions,
        seed,
        id_prefix="coding",
        workflow_type=WORKFLOW_TYPE,
        block_size=params.block_size,
        session=lambda builder, rng: _session(builder, rng, params),
    )


def _session(
    builder: SessionBuilder, rng: random.Random, params: CodingAgentParams
) -> None:
    scale = params.context_scale
    system = round(SYSTEM_TOKENS * scale)
    system_ids = builder.shared.blocks(("coding_agent", "main"), system)
    conversation = Conversation()
    waits_on: list[str] = []
    ended_turn = False
    for k in range(max(1, round(params.main_calls.sample(rng)))):
        output = _output(OUTPUT_TOKENS, rng, params)
        limit = params.max_context - output
        if k == 0:
            first = system + max(1, round(FIRST_EXTRA_TOKENS.sample(rng) * scale))
            input_length = min(limit, first)
            hash_ids = builder.prompt(
                conversation, system, input_length, base=system_ids
            )
        else:
            grown = conversation.tokens + round(GROWTH_TOKENS.sample(rng) * scale)
            input_length, hash_ids = _grow(
                builder, conversation, grown, limit, system, system_ids, params
            )
        wait_s = (USER_WAIT_S if ended_turn else TOOL_WAIT_S).sample(
            rng
        ) * params.wait_scale
        request_id = builder.call(
            "main",
            input_length=input_length,
            output_length=output,
            hash_ids=hash_ids,
            wait_for=waits_on,
            delay_ms=wait_s * 1000.0 if ended_turn else 0.0,
            tool_wait_ms=None if ended_turn else wait_s * 1000.0,
        )
        ended_turn = rng.random() < P_END_TURN
        waits_on = [request_id]
        if not ended_turn and rng.random() < params.spawn_rate:
            for _ in range(round(PARALLEL_SUBAGENTS.sample(rng))):
                waits_on.append(_subagent(builder, rng, params, spawned_by=request_id))


def _subagent(
    builder: SessionBuilder,
    rng: random.Random,
    params: CodingAgentParams,
    spawned_by: str,
) -> str:
    scale = params.context_scale
    system = round(SUB_SYSTEM_TOKENS * scale)
    system_ids = builder.shared.blocks(("coding_agent", params.subagent_type), system)
    conversation = Conversation()
    previous = spawned_by
    for k in range(max(1, round(SUB_CALLS.sample(rng)))):
        output = _output(SUB_OUTPUT_TOKENS, rng, params)
        limit = params.max_context - output
        if k == 0:
            input_length = min(limit, system + round(SUB_FIRST_EXTRA_TOKENS * scale))
            hash_ids = builder.prompt(
                conversation, system, input_length, base=system_ids
            )
            wait_ms = 0.0
        else:
            grown = conversation.tokens + round(SUB_GROWTH_TOKENS.sample(rng) * scale)
            input_length, hash_ids = _grow(
                builder, conversation, grown, limit, system, system_ids, params
            )
            wait_ms = SUB_WAIT_S.sample(rng) * params.wait_scale * 1000.0
        previous = builder.call(
            params.subagent_type,
            input_length=input_length,
            output_length=output,
            hash_ids=hash_ids,
            wait_for=[previous],
            delay_ms=0.0,
            tool_wait_ms=wait_ms,
            parent_agent="main",
        )
    return previous


def _grow(
    builder: SessionBuilder,
    conversation: Conversation,
    input_length: int,
    limit: int,
    system: int,
    system_ids: tuple[int, ...],
    params: CodingAgentParams,
) -> tuple[int, tuple[int, ...]]:
    """The next prompt extends the last one, unless it would pass ``limit``: then the
    agent compacts to system + summary, as Claude Code does near its context limit."""
    if input_length > limit:
        compacted = min(limit, system + params.compact_tokens)
        return compacted, builder.prompt(
            conversation, system, compacted, base=system_ids
        )
    return input_length, builder.prompt(conversation, conversation.tokens, input_length)


def _output(table: QuantileTable, rng: random.Random, params: CodingAgentParams) -> int:
    return max(1, min(params.max_output_tokens, round(table.sample(rng))))


def calibrate(path: str | Path) -> dict[str, list[float]]:
    """Recompute the main-agent tables above from a Claude Code calls file."""
    sessions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            if row["agent"] == "main":
                sessions[row["session"]].append(row)
    calls: list[float] = []
    first_extra: list[float] = []
    growth: list[float] = []
    output: list[float] = []
    tool_wait: list[float] = []
    user_wait: list[float] = []
    end_turns = total = 0
    for rows in sessions.values():
        rows.sort(key=lambda r: r["idx"])
        calls.append(len(rows))
        first = rows[0]
        first_extra.append(
            max(
                0,
                first["in"]
                - (first["system_tokens"] or 0)
                - (first["tool_tokens"] or 0),
            )
        )
        for before, after in pairwise(rows):
            if after["in"] >= before["in"]:
                growth.append(after["in"] - before["in"])
            if after["think_time"] is not None:
                (tool_wait if before["stop"] == "tool_use" else user_wait).append(
                    after["think_time"]
                )
        for row in rows:
            output.append(row["out"])
            end_turns += row["stop"] == "end_turn"
            total += 1
    return {
        "main_calls": _quantiles(calls),
        "first_extra_tokens": _quantiles(first_extra),
        "growth_tokens": _quantiles(growth),
        "output_tokens": _quantiles(output),
        "tool_wait_s": _quantiles(tool_wait),
        "user_wait_s": _quantiles(user_wait),
        "p_end_turn": [end_turns / total],
    }


def _quantiles(values: list[float]) -> list[float]:
    ordered = sorted(values)
    last = len(ordered) - 1
    return [ordered[min(last, int(p / 100 * last + 0.5))] for p in PERCENTS]
