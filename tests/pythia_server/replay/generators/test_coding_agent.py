from __future__ import annotations

from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import pytest

from pythia_server.replay.generators import coding_agent
from pythia_server.replay.generators.coding_agent import (
    CodingAgentParams,
    calibrate,
    generate_coding_agent,
)
from pythia_server.replay.workload import session_keys, validate_workload


def test_same_seed_same_workload_and_seeds_differ() -> None:
    assert generate_coding_agent(5, seed=3) == generate_coding_agent(5, seed=3)
    assert generate_coding_agent(5, seed=3) != generate_coding_agent(5, seed=4)


def test_sessions_are_sequential_loops_within_the_context_limit() -> None:
    params = CodingAgentParams(max_context=16384, max_output_tokens=2048)
    requests = generate_coding_agent(20, seed=1, params=params)
    validate_workload(requests)
    assert len(session_keys(requests)) == 20
    assert all(r.input_length + r.output_length <= 16384 for r in requests)
    mains = [r for r in requests if r.agent == "main"]
    roots = [r for r in requests if r.is_root]
    assert len(roots) == 20 and all(
        r.agent == "main" and r.timestamp_ms == 0.0 for r in roots
    )
    # every later main call waits for the previous main call of its session
    previous: dict[str, str] = {}
    for r in mains:
        if r.session_id in previous:
            assert previous[r.session_id] in r.wait_for
        previous[r.session_id] = r.request_id


def test_main_prompts_extend_the_previous_one_and_share_the_system_prompt() -> None:
    requests = generate_coding_agent(3, seed=2)
    system_blocks = round(coding_agent.SYSTEM_TOKENS * 0.25) // 64
    firsts = [r for r in requests if r.is_root]
    assert firsts[0].hash_ids[:system_blocks] == firsts[1].hash_ids[:system_blocks]
    mains = [
        r
        for r in requests
        if r.agent == "main" and r.session_id == firsts[0].session_id
    ]
    for before, after in pairwise(mains):
        reused = (
            before.input_length // 64
            if after.input_length > before.input_length
            else system_blocks
        )
        assert (
            after.hash_ids[: min(reused, system_blocks)]
            == before.hash_ids[: min(reused, system_blocks)]
        )
        if after.input_length > before.input_length:
            assert after.hash_ids[:reused] == before.hash_ids[:reused]


def test_subagents_branch_and_join() -> None:
    params = CodingAgentParams(spawn_rate=0.2)
    requests = generate_coding_agent(5, seed=5, params=params)
    validate_workload(requests)
    subs = [r for r in requests if r.agent == "Explore"]
    assert subs and all(r.parent_agent == "main" for r in subs)
    by_id = {r.request_id: r for r in requests}
    first_sub_calls = [r for r in subs if by_id[r.wait_for[0]].agent == "main"]
    assert first_sub_calls
    joins = [
        r
        for r in requests
        if r.agent == "main" and any(by_id[d].agent == "Explore" for d in r.wait_for)
    ]
    assert joins and all(len(r.wait_for) >= 2 for r in joins)


def test_invalid_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        generate_coding_agent(0)
    with pytest.raises(ValueError):
        generate_coding_agent(
            1,
            params=replace(CodingAgentParams(), max_context=100, max_output_tokens=200),
        )


def test_tables_match_the_recorded_file(shared_workloads: Path) -> None:
    measured = calibrate(shared_workloads / "claude_code_calls.jsonl")
    assert measured["main_calls"] == list(coding_agent.MAIN_CALLS.values)
    assert measured["growth_tokens"] == list(coding_agent.GROWTH_TOKENS.values)
    assert measured["output_tokens"] == list(coding_agent.OUTPUT_TOKENS.values)
    assert measured["first_extra_tokens"] == list(
        coding_agent.FIRST_EXTRA_TOKENS.values
    )
    assert measured["tool_wait_s"] == list(coding_agent.TOOL_WAIT_S.values)
    assert measured["user_wait_s"] == list(coding_agent.USER_WAIT_S.values)
    assert measured["p_end_turn"][0] == pytest.approx(coding_agent.P_END_TURN, abs=5e-4)
