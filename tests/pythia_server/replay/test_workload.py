from __future__ import annotations

import json
from pathlib import Path

import pytest

from pythia_server.replay.workload import (
    WorkloadError,
    WorkloadRequest,
    load_workload,
    prompt_token_ids,
    save_workload,
    session_keys,
    validate_workload,
)


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _req(request_id: str, **kw) -> WorkloadRequest:
    base = {
        "input_length": 100,
        "output_length": 5,
        "hash_ids": (1, 2),
        "block_size": 64,
    }
    base.update(kw)
    return WorkloadRequest(request_id=request_id, **base)


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    requests = [
        _req(
            "a", session_id="s", workflow_type="w", agent="planner", timestamp_ms=12.5
        ),
        _req(
            "b",
            session_id="s",
            workflow_type="w",
            agent="searcher",
            parent_agent="planner",
            phase="search",
            wait_for=("a",),
            delay_ms=3.0,
            tool_wait_ms=250.0,
            timestamp_ms=40.0,
        ),
    ]
    path = tmp_path / "w.jsonl"
    save_workload(requests, path)
    assert load_workload(path) == requests
    first = json.loads(path.read_text().splitlines()[0])
    assert (
        first["timestamp"] == 12.5
        and first["block_size"] == 64
        and "wait_for" not in first
    )
    second = json.loads(path.read_text().splitlines()[1])
    assert (
        second["delay"] == 3
        and second["tool_wait_ms"] == 250
        and second["wait_for"] == ["a"]
    )


def test_unknown_fields_survive_a_round_trip(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "w.jsonl",
        [
            {
                "request_id": "a",
                "input_length": 10,
                "output_length": 1,
                "hash_ids": [1],
                "priority": 3,
            },
        ],
    )
    (request,) = load_workload(path)
    assert request.extra == {"priority": 3}
    save_workload([request], tmp_path / "out.jsonl")
    assert json.loads((tmp_path / "out.jsonl").read_text())["priority"] == 3


def test_plain_mooncake_rows_load_with_block_size_512(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "m.jsonl",
        [
            {
                "timestamp": 0,
                "input_length": 1000,
                "output_length": 6,
                "hash_ids": [0, 1],
            },
            {
                "timestamp": 30,
                "input_length": 600,
                "output_length": 4,
                "hash_ids": [0, 2],
            },
        ],
    )
    requests = load_workload(path)
    assert [r.block_size for r in requests] == [512, 512]
    assert all(r.is_root and r.session_id is None for r in requests)
    assert [r.timestamp_ms for r in requests] == [0.0, 30.0]
    assert len(session_keys(requests)) == 2


def test_plain_rows_of_one_session_chain_like_dynamo(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "m.jsonl",
        [
            {
                "session_id": "s",
                "timestamp": 100,
                "input_length": 10,
                "output_length": 1,
                "hash_ids": [1],
            },
            {
                "session_id": "t",
                "timestamp": 150,
                "input_length": 10,
                "output_length": 1,
                "hash_ids": [5],
            },
            {
                "session_id": "s",
                "timestamp": 400,
                "input_length": 10,
                "output_length": 1,
                "hash_ids": [1],
            },
            {
                "session_id": "s",
                "delay": 7,
                "input_length": 10,
                "output_length": 1,
                "hash_ids": [1],
            },
        ],
    )
    first, other, second, third = load_workload(path)
    assert first.is_root and other.is_root
    assert second.wait_for == (first.request_id,) and second.delay_ms == 300.0
    assert third.wait_for == (second.request_id,) and third.delay_ms == 7.0


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [
                {
                    "request_id": "a",
                    "input_length": 10,
                    "output_length": 1,
                    "hash_ids": [1],
                },
                {
                    "request_id": "a",
                    "input_length": 10,
                    "output_length": 1,
                    "hash_ids": [1],
                },
            ],
            ":2: duplicate request_id",
        ),
        (
            [
                {
                    "request_id": "a",
                    "input_length": 10,
                    "output_length": 1,
                    "hash_ids": [1],
                    "wait_for": ["x"],
                }
            ],
            ":1: waits for unknown request_id 'x'",
        ),
        (
            [
                {
                    "request_id": "a",
                    "input_length": 10,
                    "output_length": 1,
                    "hash_ids": [1],
                    "wait_for": ["b"],
                },
                {
                    "request_id": "b",
                    "input_length": 10,
                    "output_length": 1,
                    "hash_ids": [1],
                    "wait_for": ["a"],
                },
            ],
            "dependency cycle",
        ),
        (
            [
                {
                    "request_id": "a",
                    "input_length": 600,
                    "output_length": 1,
                    "hash_ids": [1],
                }
            ],
            ":1: input_length 600 exceeds",
        ),
        (
            [
                {
                    "request_id": "a",
                    "input_length": 10,
                    "output_length": 1,
                    "hash_ids": [1],
                    "delay": 5,
                }
            ],
            ":1: delay/tool_wait_ms on a request without wait_for",
        ),
        (
            [
                {
                    "request_id": "a",
                    "input_length": 10,
                    "output_length": 1,
                    "hash_ids": [1],
                    "block_size": 64,
                },
                {
                    "request_id": "b",
                    "input_length": 10,
                    "output_length": 1,
                    "hash_ids": [1],
                    "block_size": 32,
                },
            ],
            ":2: block_size 32 differs from 64",
        ),
        (
            [
                {
                    "request_id": "a",
                    "input_length": -1,
                    "output_length": 1,
                    "hash_ids": [1],
                }
            ],
            ":1: input_length must be a non-negative integer",
        ),
        (
            [
                {
                    "request_id": "a",
                    "input_length": 10,
                    "output_length": 1,
                    "hash_ids": [2**40],
                }
            ],
            ":1: hash_ids must be in",
        ),
        (
            [
                {
                    "request_id": "a",
                    "input_length": 10,
                    "output_length": 1,
                    "hash_ids": [1],
                },
                {"input_length": 10, "output_length": 1, "hash_ids": [1]},
            ],
            ":2: mixes agentic rows",
        ),
        (
            [
                {
                    "request_id": "a",
                    "input_length": 10,
                    "output_length": 1,
                    "hash_ids": [1],
                    "timestamp": -3,
                }
            ],
            ":1: timestamp must be a finite number",
        ),
    ],
)
def test_bad_rows_name_file_and_line(
    tmp_path: Path, rows: list[dict], message: str
) -> None:
    path = _write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(WorkloadError) as info:
        load_workload(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"request_id": "a", "input_length": 1, "output_length": 1, "hash_ids": [1]}\n\n{oops\n'
    )
    with pytest.raises(WorkloadError, match=r"bad.jsonl:3: not valid JSON"):
        load_workload(path)


def test_missing_and_empty_files_are_clear(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match="cannot read"):
        load_workload(tmp_path / "absent.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(WorkloadError, match="no requests"):
        load_workload(tmp_path / "empty.jsonl")


def test_block_size_argument_conflicts_with_rows(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "w.jsonl",
        [
            {
                "request_id": "a",
                "input_length": 10,
                "output_length": 1,
                "hash_ids": [1],
                "block_size": 64,
            },
        ],
    )
    assert load_workload(path, block_size=64)[0].block_size == 64
    with pytest.raises(WorkloadError, match="differs"):
        load_workload(path, block_size=16)


def test_save_refuses_an_invalid_list(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match="unknown request_id"):
        save_workload([_req("a", wait_for=("nope",))], tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


def test_prompt_token_ids_match_dynamo_synthesis() -> None:
    request = _req("a", input_length=5, hash_ids=(7, 9), block_size=3)
    assert prompt_token_ids(request) == [7, 7, 7, 9, 9]
    assert (
        _req("b", delay_ms=2.0, tool_wait_ms=3.5, wait_for=("a",)).dependency_delay_ms
        == 5.5
    )


def test_validate_accepts_a_diamond() -> None:
    validate_workload(
        [
            _req("a"),
            _req("b", wait_for=("a",)),
            _req("c", wait_for=("a",)),
            _req("d", wait_for=("b", "c")),
        ]
    )
