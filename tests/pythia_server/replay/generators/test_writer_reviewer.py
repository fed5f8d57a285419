from __future__ import annotations

from itertools import pairwise

from pythia_server.replay.generators._common import QuantileTable
from pythia_server.replay.generators.writer_reviewer import (
    WriterReviewerParams,
    generate_writer_reviewer,
)
from pythia_server.replay.workload import validate_workload


def test_seeded_and_deterministic() -> None:
    assert generate_writer_reviewer(6, seed=2) == generate_writer_reviewer(6, seed=2)
    assert generate_writer_reviewer(6, seed=2) != generate_writer_reviewer(6, seed=3)


def test_draft_then_review_revise_cycles_each_extending_its_own_history() -> None:
    params = WriterReviewerParams(
        review_cycles=QuantileTable.constant(3), client_gap_ms=500.0
    )
    requests = generate_writer_reviewer(4, seed=1, params=params)
    validate_workload(requests)
    for session in {r.session_id for r in requests}:
        calls = [r for r in requests if r.session_id == session]
        assert [r.agent for r in calls] == ["writer"] + ["reviewer", "writer"] * 3
        assert calls[0].is_root and all(
            c.wait_for == (p.request_id,) for p, c in pairwise(calls)
        )
        assert all(c.delay_ms == 500.0 for c in calls[1:])
        writers = [r for r in calls if r.agent == "writer"]
        for before, after in pairwise(writers):
            assert after.input_length > before.input_length
            assert (
                after.hash_ids[: before.input_length // 64]
                == before.hash_ids[: before.input_length // 64]
            )


def test_review_cycles_follow_the_chatdev_table() -> None:
    requests = generate_writer_reviewer(400, seed=0)
    cycles = [
        sum(1 for r in requests if r.session_id == s and r.agent == "reviewer")
        for s in {r.session_id for r in requests}
    ]
    assert set(cycles) <= {2, 3, 5, 6, 10}
    assert 0.5 < cycles.count(3) / len(cycles) < 0.75  # 24 of 39 ChatDev runs
