from __future__ import annotations

import pytest

from pythia_server.replay.dependencies import DependencyTracker
from pythia_server.replay.workload import WorkloadRequest


def _req(
    request_id: str,
    session: str,
    ts: float | None = None,
    wait_for: tuple[str, ...] = (),
    delay: float | None = None,
    tool: float | None = None,
) -> WorkloadRequest:
    return WorkloadRequest(
        request_id=request_id,
        session_id=session,
        timestamp_ms=ts,
        wait_for=wait_for,
        delay_ms=delay,
        tool_wait_ms=tool,
        input_length=10,
        output_length=1,
        hash_ids=(1,),
    )


# The four-call file checked against Dynamo 1.4.2 (docs/workloads.md): b's timestamp is ignored,
# d waits for the later of b and c, then its delay.
WORKLOAD = [
    _req("a", "s1", 0.0),
    _req("b", "s1", 999_999.0, ("a",), delay=1000.0, tool=500.0),
    _req("c", "s2", 5000.0),
    _req("d", "s1", None, ("b", "c"), delay=250.0),
]


def test_roots_at_their_timestamps_and_dependents_after_the_last_dependency() -> None:
    tracker = DependencyTracker(WORKLOAD)
    assert [(c.request.request_id, c.ready_ms) for c in tracker.initial()] == [
        ("a", 0.0),
        ("c", 5000.0),
    ]
    (b,) = tracker.complete("a", 40.0)
    assert (b.request.request_id, b.ready_ms) == ("b", 1540.0)
    assert tracker.complete("b", 1580.0) == []
    assert tracker.complete("c", 5030.0)[0].ready_ms == 5280.0
    assert not tracker.session_finished("s1") and tracker.session_finished("s2")
    tracker.complete("d", 5300.0)
    assert tracker.session_finished("s1") and tracker.done


def test_completions_out_of_time_order_still_use_the_latest() -> None:
    tracker = DependencyTracker(WORKLOAD)
    tracker.complete("a", 0.0)
    tracker.complete("c", 9000.0)
    (d,) = tracker.complete("b", 2000.0)
    assert d.ready_ms == 9250.0


def test_closed_loop_start_keeps_the_session_offsets() -> None:
    requests = [_req("x0", "x", 1000.0), _req("x1", "x", 1600.0), _req("y0", "y", 10.0)]
    tracker = DependencyTracker(requests)
    assert tracker.session_order() == ["y", "x"]
    assert [
        (c.request.request_id, c.ready_ms) for c in tracker.start_session("x", 50_000.0)
    ] == [("x0", 50_000.0), ("x1", 50_600.0)]
    with pytest.raises(KeyError):
        tracker.start_session("nope", 0.0)


def test_double_or_unknown_completion_is_an_error() -> None:
    tracker = DependencyTracker(WORKLOAD)
    tracker.complete("a", 1.0)
    with pytest.raises(ValueError):
        tracker.complete("a", 2.0)
    with pytest.raises(KeyError):
        tracker.complete("zz", 2.0)
