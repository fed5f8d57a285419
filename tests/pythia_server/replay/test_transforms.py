from __future__ import annotations

import pytest

from pythia_server.replay.stats import workload_stats
from pythia_server.replay.transforms import (
    first_sessions,
    replicate_sessions,
    resize_sessions,
    split_sessions,
)
from pythia_server.replay.workload import (
    WorkloadRequest,
    session_keys,
    validate_workload,
)


def _req(
    request_id: str,
    session: str,
    hash_ids: tuple[int, ...],
    wait_for: tuple[str, ...] = (),
) -> WorkloadRequest:
    return WorkloadRequest(
        request_id=request_id,
        session_id=session,
        timestamp_ms=0.0 if not wait_for else None,
        wait_for=wait_for,
        delay_ms=0.0 if wait_for else None,
        input_length=64 * len(hash_ids),
        output_length=1,
        hash_ids=hash_ids,
        block_size=64,
    )


WORKLOAD = [
    _req("a0", "a", (1, 2, 3)),
    _req("a1", "a", (1, 2, 3, 4), ("a0",)),
    _req("b0", "b", (1, 2, 9)),  # blocks 1, 2 are a shared role prompt
]


def test_copies_rename_and_keep_only_shared_blocks() -> None:
    out = replicate_sessions(WORKLOAD, 3)
    validate_workload(out)
    assert len(out) == 9 and session_keys(out)[:4] == ["a", "b", "a~1", "b~1"]
    by_id = {r.request_id: r for r in out}
    assert by_id["a1~2"].wait_for == ("a0~2",)
    assert by_id["a0~1"].hash_ids[:2] == (1, 2) and by_id["a0~1"].hash_ids[2] not in (
        3,
        9,
    )
    assert (
        by_id["a1~1"].hash_ids[:3] == by_id["a0~1"].hash_ids
    )  # the copy's own prefix reuse kept
    assert (
        by_id["a0~1"].hash_ids[2] != by_id["a0~2"].hash_ids[2]
    )  # copies do not share private blocks


def test_copies_reuse_only_the_shared_blocks_across_each_other() -> None:
    (once,) = workload_stats(WORKLOAD)
    (many,) = workload_stats(replicate_sessions(WORKLOAD, 4))
    assert once.reuse == 5 / 10
    assert (
        many.reuse == (5 + 3 * 7) / 40
    )  # each copy: its a0 reuses blocks 1, 2; a1 and b0 as before
    assert replicate_sessions(WORKLOAD, 1) == WORKLOAD
    with pytest.raises(ValueError):
        replicate_sessions(WORKLOAD, 0)


def test_first_sessions() -> None:
    assert [r.request_id for r in first_sessions(WORKLOAD, 1)] == ["a0", "a1"]
    with pytest.raises(ValueError):
        first_sessions(WORKLOAD, 0)


def test_split_keeps_file_order_and_at_least_one_training_session() -> None:
    train, test = split_sessions(WORKLOAD, 0.5)
    assert [r.request_id for r in train] == ["a0", "a1"]
    assert [r.request_id for r in test] == ["b0"]
    train, test = split_sessions(WORKLOAD, 0.01)
    assert session_keys(train) == ["a"] and session_keys(test) == ["b"]


def test_resize_replicates_then_cuts_to_exactly_n_sessions() -> None:
    assert len(session_keys(resize_sessions(WORKLOAD, 5))) == 5
    assert resize_sessions(WORKLOAD, 1) == first_sessions(WORKLOAD, 1)
