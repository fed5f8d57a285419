from __future__ import annotations

import json
from pathlib import Path

import pytest

from pythia_server.replay.converters.chatdev import (
    ChatDevOptions,
    convert_chatdev,
    read_chatdev,
)
from pythia_server.replay.workload import (
    WorkloadError,
    load_workload,
    save_workload,
    session_keys,
)


def _row(
    run: str,
    seq: int,
    t_send: float,
    t_recv: float,
    prompt: int,
    out: int,
    phase: str,
    agent: str,
    assistant: str,
    user: str,
    a_id: str,
    u_id: str,
    exact: bool = True,
) -> dict:
    return {
        "workflow": run,
        "seq": seq,
        "t_send": t_send,
        "t_send_exact": exact,
        "t_recv": t_recv,
        "prompt_tokens": prompt,
        "completion_tokens": out,
        "phase": phase,
        "agent": agent,
        "assistant_role": assistant,
        "user_role": user,
        "a_prompt_id": a_id,
        "u_prompt_id": u_id,
    }


RUN_A = [
    _row(
        "A",
        0,
        1000,
        1004,
        300,
        20,
        "Coding",
        "Programmer",
        "Programmer",
        "CTO",
        "prog",
        "cto",
    ),
    _row(
        "A",
        1,
        1004,
        1010,
        600,
        200,
        "CodeReviewComment",
        "Code Reviewer",
        "Code Reviewer",
        "Programmer",
        "rev",
        "prog",
    ),
    _row(
        "A",
        2,
        1012,
        1013,
        830,
        5,
        "CodeReviewComment",
        "Programmer",
        "Code Reviewer",
        "Programmer",
        "rev",
        "prog",
    ),
    _row(
        "A",
        3,
        1013,
        1015,
        900,
        50,
        "CodeReviewComment",
        "Code Reviewer",
        "Code Reviewer",
        "Programmer",
        "rev",
        "prog",
    ),
    _row(
        "A",
        4,
        1020,
        1030,
        700,
        90,
        "TestErrorSummary",
        "Programmer",
        "Programmer",
        "Tester",
        "prog",
        "test",
    ),
    _row(
        "A",
        5,
        1029,
        1031,
        700,
        90,
        "Manual",
        "Programmer",
        "Programmer",
        "CEO",
        "prog",
        "ceo",
        exact=False,
    ),
]
RUN_B = [
    _row(
        "B",
        0,
        5000,
        5003,
        280,
        10,
        "Coding",
        "Programmer",
        "Programmer",
        "CTO",
        "prog",
        "cto",
    )
]


def test_runs_are_sequential_sessions_with_recorded_starts() -> None:
    requests = convert_chatdev(RUN_A + RUN_B)
    assert session_keys(requests) == ["A", "B"]
    a = [r for r in requests if r.session_id == "A"]
    assert all(r.workflow_type == "chatdev" for r in requests)
    assert a[0].is_root and a[0].timestamp_ms == 0.0
    assert [r.wait_for for r in a[1:]] == [(f"A:{i}",) for i in range(5)]
    assert requests[-1].is_root and requests[-1].timestamp_ms == 4_000_000.0
    assert [r.agent for r in a[:3]] == ["Programmer", "Code Reviewer", "Programmer"]
    assert a[1].phase == "CodeReviewComment"


def test_gaps_become_delay_or_tool_wait_and_never_negative() -> None:
    a = convert_chatdev(RUN_A)
    assert (a[1].delay_ms, a[1].tool_wait_ms) == (0.0, None)
    assert (a[2].delay_ms, a[2].tool_wait_ms) == (2000.0, None)
    assert (a[4].delay_ms, a[4].tool_wait_ms) == (
        0.0,
        5000.0,
    )  # before a Test phase: code execution
    assert a[5].delay_ms == 0.0  # sent (logged) before the previous receive


def test_role_prompts_are_shared_across_runs_and_speakers_extend_their_history() -> (
    None
):
    requests = convert_chatdev(
        RUN_A + RUN_B, ChatDevOptions(block_size=64, system_tokens=250)
    )
    a0, a1, a2, a3 = requests[:4]
    b0 = requests[-1]
    # Programmer's role prompt: min(250, shortest prompt using it = 280) -> 3 whole blocks.
    assert a0.hash_ids[:3] == b0.hash_ids[:3] and a0.hash_ids[3:] != b0.hash_ids[3:]
    # The Code Reviewer's second call in the phase instance extends its first prompt (600 tokens).
    assert a3.hash_ids[:9] == a1.hash_ids[:9] and len(a3.hash_ids) == 15
    # The Programmer, speaking as the phase's user, starts from its own role prompt only.
    assert a2.hash_ids[:3] == a0.hash_ids[:3] and a2.hash_ids[3] != a1.hash_ids[3]


def test_shared_history_option_is_the_upper_bound() -> None:
    per_speaker = convert_chatdev(RUN_A, ChatDevOptions(history="per-speaker"))
    shared = convert_chatdev(RUN_A, ChatDevOptions(history="shared"))
    assert shared[2].hash_ids[:9] == shared[1].hash_ids[:9]
    assert per_speaker[2].hash_ids[:9] != per_speaker[1].hash_ids[:9]
    with pytest.raises(WorkloadError):
        convert_chatdev(RUN_A, ChatDevOptions(history="everyone"))


def test_a_run_name_whose_seq_restarts_is_split() -> None:
    twice = RUN_B + [dict(RUN_B[0], t_send=6000, t_recv=6001)]
    requests = convert_chatdev(twice)
    assert session_keys(requests) == ["B", "B#2"]
    assert all(r.is_root for r in requests)


def test_read_rejects_a_row_without_required_fields(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(RUN_B[0]) + "\n" + json.dumps({"workflow": "x"}) + "\n")
    with pytest.raises(
        WorkloadError, match=r"c.jsonl:2: ChatDev row is missing 't_send'"
    ):
        read_chatdev(path)


def test_the_recorded_file_converts_and_reloads(
    shared_workloads: Path, tmp_path: Path
) -> None:
    requests = convert_chatdev(read_chatdev(shared_workloads / "chatdev_calls.jsonl"))
    assert len(requests) == 984
    assert len(session_keys(requests)) == 40  # 39 run names, one holding two logs
    assert sum(r.is_root for r in requests) == 40
    assert all(len(r.wait_for) <= 1 for r in requests)
    save_workload(requests, tmp_path / "chatdev.jsonl")
    assert load_workload(tmp_path / "chatdev.jsonl") == requests


def _review_round(run: str, seq: int, t: float) -> list[dict]:
    """One review round: the reviewer comments, the programmer modifies."""
    return [
        _row(
            run,
            seq,
            t,
            t + 1,
            900 + 10 * seq,
            50,
            "CodeReviewComment",
            "Code Reviewer",
            "Code Reviewer",
            "Programmer",
            "rev",
            "prog",
        ),
        _row(
            run,
            seq + 1,
            t + 2,
            t + 3,
            950 + 10 * seq,
            400,
            "CodeReviewModification",
            "Programmer",
            "Programmer",
            "Code Reviewer",
            "prog",
            "rev",
        ),
    ]


def test_a_phase_prompt_repeats_within_a_run_but_not_across_runs() -> None:
    rows = (
        _review_round("A", 0, 1000)
        + _review_round("A", 2, 1010)
        + _review_round("B", 0, 5000)
    )
    a0, a1, a2, a3, b0, _ = convert_chatdev(
        rows, ChatDevOptions(system_tokens=250, phase_prompt_tokens=32)
    )
    # 250 + 32 tokens -> 4 whole blocks: 3 of the role prompt, then one that holds the phase's opening.
    assert a2.hash_ids[:4] == a0.hash_ids[:4] and a2.hash_ids[4] != a0.hash_ids[4]
    assert a3.hash_ids[:4] == a1.hash_ids[:4]
    assert a1.hash_ids[3] != a0.hash_ids[3]  # another phase (and speaker)
    assert (
        b0.hash_ids[:3] == a0.hash_ids[:3] and b0.hash_ids[3] != a0.hash_ids[3]
    )  # another run's task
    off = convert_chatdev(
        rows, ChatDevOptions(system_tokens=250, phase_prompt_tokens=0)
    )
    assert (
        off[2].hash_ids[:3] == off[0].hash_ids[:3]
        and off[2].hash_ids[3] != off[0].hash_ids[3]
    )
    with pytest.raises(WorkloadError):
        convert_chatdev(rows, ChatDevOptions(phase_prompt_tokens=-1))
