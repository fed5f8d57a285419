from __future__ import annotations

import json
from pathlib import Path

import pytest

from pythia_server.replay.converters.claude_code import (
    ClaudeCodeOptions,
    convert_claude_code,
    read_claude_code,
)
from pythia_server.replay.workload import (
    WorkloadError,
    load_workload,
    save_workload,
    session_keys,
)


def _row(
    session: str,
    agent: str,
    idx: int,
    t: float,
    api: float | None,
    think: float | None,
    tokens: int,
    out: int,
    stop: str,
    hit: int,
    lcp: int,
    agent_type: str = "main",
    system: int = 2000,
    tools: int = 8000,
) -> dict:
    return {
        "session": session,
        "agent": agent,
        "agent_type": agent_type,
        "idx": idx,
        "t": t,
        "in": tokens,
        "out": out,
        "api_time": api,
        "think_time": think,
        "stop": stop,
        "model": "m",
        "stream": api is None,
        "n_blocks": tokens // 64,
        "prefix_hit_blocks": hit,
        "prev_same_agent_lcp": lcp,
        "system_tokens": system,
        "tool_tokens": tools,
    }


SESSION = [
    _row("s1", "main", 0, 0.0, 5.0, 0.0, 20000, 100, "tool_use", 0, 0),
    _row(
        "s1",
        "agent_001",
        0,
        6.0,
        2.0,
        0.0,
        9000,
        200,
        "tool_use",
        0,
        0,
        "Explore",
        700,
        7000,
    ),
    _row(
        "s1",
        "agent_001",
        1,
        10.0,
        3.0,
        2.0,
        11000,
        300,
        "end_turn",
        140,
        140,
        "Explore",
        700,
        7000,
    ),
    _row("s1", "main", 1, 20.0, 4.0, 15.0, 21000, 150, "end_turn", 312, 312),
    _row("s1", "main", 2, 60.0, None, 36.0, 22000, 120, "", 328, 328),
    _row("s1", "main", 3, 100.0, 2.0, 30.0, 23000, 90, "tool_use", 343, 343),
]
OTHER = [_row("s2", "main", 0, 0.0, 3.0, 0.0, 12000, 50, "tool_use", 0, 0)]


def _by_id(requests):
    return {r.request_id: r for r in requests}


def test_subagents_branch_from_their_spawner_and_join_the_next_main_call() -> None:
    requests = _by_id(convert_claude_code(SESSION))
    assert requests["s1:agent_001:0"].wait_for == ("s1:main:0",)
    assert requests["s1:agent_001:1"].wait_for == ("s1:agent_001:0",)
    assert set(requests["s1:main:1"].wait_for) == {"s1:main:0", "s1:agent_001:1"}
    sub = requests["s1:agent_001:0"]
    assert (sub.agent, sub.parent_agent, sub.extra["agent_instance"]) == (
        "Explore",
        "main",
        "agent_001",
    )
    assert requests["s1:main:0"].is_root and requests["s1:main:0"].parent_agent is None


def test_waits_are_tool_time_after_tool_use_and_user_time_otherwise() -> None:
    requests = _by_id(convert_claude_code(SESSION))
    join = requests[
        "s1:main:1"
    ]  # 20 s start - latest dependency end (13 s), after a tool_use stop
    assert (join.delay_ms, join.tool_wait_ms) == (0.0, 7000.0)
    after_end_turn = requests["s1:main:2"]
    assert (after_end_turn.delay_ms, after_end_turn.tool_wait_ms) == (36000.0, None)
    after_unknown_stop = requests["s1:main:3"]
    assert (after_unknown_stop.delay_ms, after_unknown_stop.tool_wait_ms) == (
        30000.0,
        None,
    )
    assert requests["s1:agent_001:1"].tool_wait_ms == 2000.0


def test_contexts_scale_per_session_to_fit_and_keep_prefix_reuse() -> None:
    options = ClaudeCodeOptions(max_context=16384)
    requests = convert_claude_code(SESSION + OTHER, options)
    assert all(r.input_length + r.output_length <= 16384 for r in requests)
    by_id = _by_id(requests)
    first, second = by_id["s1:main:0"], by_id["s1:main:1"]
    factor = (16384 - 90) / 23000  # the tightest call of the session
    assert first.input_length == round(20000 * factor)
    shared = round(312 * 64 * factor) // 64
    assert second.hash_ids[:shared] == first.hash_ids[:shared]
    assert (
        second.hash_ids[shared] != first.hash_ids[min(shared, len(first.hash_ids) - 1)]
    )
    # s2 fits unscaled; its system + tools prefix (10,000 tokens = 156 blocks) is shared with s1's.
    other = by_id["s2:main:0"]
    assert other.input_length == 12000
    common = round(10000 * factor) // 64
    assert other.hash_ids[:common] == first.hash_ids[:common]
    assert other.hash_ids[156] != first.hash_ids[156]


def test_drop_policy_leaves_out_sessions_that_do_not_fit() -> None:
    requests = convert_claude_code(
        SESSION + OTHER, ClaudeCodeOptions(max_context=16384, context_policy="drop")
    )
    assert session_keys(requests) == ["s2"]
    with pytest.raises(WorkloadError, match="no session fits"):
        convert_claude_code(
            SESSION, ClaudeCodeOptions(max_context=16384, context_policy="drop")
        )


def test_missing_api_time_ends_at_the_next_call_minus_its_think_time() -> None:
    # main:2 has no api_time; main:3 (t=100, think 30) puts its end at 70 s, so a sub-agent
    # starting at 65 s was spawned by main:1 (ended 24 s), not by the still-running main:2.
    late = _row(
        "s1",
        "agent_002",
        0,
        65.0,
        1.0,
        0.0,
        9000,
        10,
        "end_turn",
        0,
        0,
        "Explore",
        700,
        7000,
    )
    requests = _by_id(convert_claude_code(SESSION + [late]))
    assert requests["s1:agent_002:0"].wait_for == ("s1:main:1",)
    assert (
        "s1:agent_002:0" in requests["s1:main:3"].wait_for
    )  # joined by the next main call


def test_outputs_are_capped() -> None:
    big = [dict(SESSION[0], out=20000)]
    (request,) = convert_claude_code(big, ClaudeCodeOptions(max_output_tokens=4096))
    assert request.output_length == 4096


def test_read_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "cc.jsonl"
    path.write_text(json.dumps(SESSION[0]) + "\n" + json.dumps({"session": "x"}) + "\n")
    with pytest.raises(
        WorkloadError, match=r"cc.jsonl:2: Claude Code row is missing agent"
    ):
        read_claude_code(path)


def test_the_recorded_file_converts_within_the_context_limit(
    shared_workloads: Path, tmp_path: Path
) -> None:
    requests = convert_claude_code(
        read_claude_code(shared_workloads / "claude_code_calls.jsonl")
    )
    assert len(requests) == 25226 and len(session_keys(requests)) == 350
    assert max(r.input_length + r.output_length for r in requests) <= 32768
    assert sum(r.is_root for r in requests) == 350  # every sub-agent found its spawner
    assert any(len(r.wait_for) > 1 for r in requests)  # and joins exist
    first_sessions = set(session_keys(requests)[:20])
    sample = [r for r in requests if r.session_id in first_sessions]
    save_workload(sample, tmp_path / "cc.jsonl")
    assert load_workload(tmp_path / "cc.jsonl") == sample
