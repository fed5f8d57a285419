from __future__ import annotations

import json
from pathlib import Path

from pythia_server.replay.converters.mooncake import convert_mooncake
from pythia_server.replay.workload import load_workload, save_workload


def test_plain_rows_become_tagged_independent_calls(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    rows = [
        {"timestamp": 0, "input_length": 1000, "output_length": 6, "hash_ids": [0, 1]},
        {"timestamp": 25, "input_length": 512, "output_length": 2, "hash_ids": [0]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    requests = convert_mooncake(path)
    assert [r.request_id for r in requests] == ["mooncake-0", "mooncake-1"]
    assert all(
        r.workflow_type == "mooncake" and r.block_size == 512 and r.is_root
        for r in requests
    )
    assert requests[1].timestamp_ms == 25.0 and requests[1].hash_ids == (0,)


def test_the_recorded_file_converts(shared_workloads: Path, tmp_path: Path) -> None:
    requests = convert_mooncake(shared_workloads / "mooncake_synthetic_trace.jsonl")
    assert len(requests) == 3993 and all(r.is_root for r in requests)
    save_workload(requests, tmp_path / "m.jsonl")
    assert load_workload(tmp_path / "m.jsonl") == requests
