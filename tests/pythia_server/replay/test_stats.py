from __future__ import annotations

from pythia_server.replay.stats import format_table, workload_stats
from pythia_server.replay.workload import WorkloadRequest


def _req(
    request_id: str,
    session: str,
    kind: str,
    hash_ids: tuple[int, ...],
    wait_for: tuple[str, ...] = (),
) -> WorkloadRequest:
    return WorkloadRequest(
        request_id=request_id,
        session_id=session,
        workflow_type=kind,
        wait_for=wait_for,
        delay_ms=0.0 if wait_for else None,
        timestamp_ms=0.0,
        input_length=64 * len(hash_ids),
        output_length=10,
        hash_ids=hash_ids,
        block_size=64,
    )


def test_reuse_counts_whole_prefixes_and_fanout_counts_released_calls() -> None:
    requests = [
        _req("p", "s", "research", (1, 2)),
        _req("a", "s", "research", (1, 2, 3), ("p",)),
        _req("b", "s", "research", (1, 2, 4), ("p",)),
        _req(
            "c", "s", "research", (1, 9, 3), ("p",)
        ),  # block 3 after 9 is not the prefix (1, 2, 3)
        _req("z", "t", "chat", (1, 2)),
    ]
    research, chat, total = workload_stats(requests)
    assert (
        research.workflow_type == "research"
        and research.calls == 4
        and research.sessions == 1
    )
    assert research.reuse == 5 / 11  # a: 2, b: 2, c: 1 reused of 2 + 3 + 3 + 3 blocks
    assert research.fanout_max == 3 and research.fanout_mean == 3.0
    assert chat.reuse == 1.0 and chat.fanout_max == 0
    assert total.workflow_type == "all" and total.calls == 5
    table = format_table([research, chat, total])
    assert "research" in table and "0.455" in table
