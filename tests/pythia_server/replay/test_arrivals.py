from __future__ import annotations

import pytest

from pythia_server.replay.arrivals import (
    BurstyArrivals,
    ClosedLoop,
    PoissonArrivals,
    RecordedArrivals,
    apply_arrivals,
    session_starts_ms,
)
from pythia_server.replay.workload import WorkloadRequest


def _req(
    request_id: str,
    session: str | None,
    ts: float | None = 0.0,
    wait_for: tuple[str, ...] = (),
) -> WorkloadRequest:
    return WorkloadRequest(
        request_id=request_id,
        session_id=session,
        timestamp_ms=ts,
        wait_for=wait_for,
        delay_ms=0.0 if wait_for else None,
        input_length=10,
        output_length=1,
        hash_ids=(1,),
    )


def test_poisson_is_seeded_and_has_the_asked_rate() -> None:
    process = PoissonArrivals(rate_per_s=2.0, seed=3)
    starts = process.session_starts_s([0.0] * 4000)
    assert starts == process.session_starts_s([0.0] * 4000)
    assert starts != PoissonArrivals(rate_per_s=2.0, seed=4).session_starts_s(
        [0.0] * 4000
    )
    assert starts[0] == 0.0 and starts == sorted(starts)
    assert 1.9 < len(starts) / starts[-1] < 2.1


def test_bursty_rate_shape() -> None:
    process = BurstyArrivals(
        rate_per_s=1.0, burst_at_s=100.0, ramp_s=60.0, hold_s=300.0
    )
    assert process.rate_at(50.0) == 1.0
    assert process.rate_at(130.0) == pytest.approx(1.25)
    assert process.rate_at(160.0) == pytest.approx(1.5)
    assert process.rate_at(459.0) == pytest.approx(1.5)
    assert process.rate_at(461.0) == 1.0
    periodic = BurstyArrivals(rate_per_s=1.0, burst_at_s=100.0, period_s=1000.0)
    assert (
        periodic.rate_at(1200.0) == pytest.approx(1.5)
        and periodic.rate_at(1900.0) == 1.0
    )


def test_bursty_arrivals_are_denser_during_the_burst() -> None:
    process = BurstyArrivals(
        rate_per_s=4.0, seed=1, burst_at_s=1000.0, ramp_s=60.0, hold_s=1000.0
    )
    starts = process.session_starts_s([0.0] * 12000)
    before = sum(1 for t in starts if t < 1000.0) / 1000.0
    during = sum(1 for t in starts if 1060.0 <= t < 2060.0) / 1000.0
    assert during / before == pytest.approx(1.5, rel=0.08)


def test_recorded_arrivals_keep_gaps_and_speed_up() -> None:
    assert RecordedArrivals().session_starts_s([5.0, 7.0, 11.0]) == [0.0, 2.0, 6.0]
    assert RecordedArrivals(speedup=2.0).session_starts_s([5.0, 7.0, 11.0]) == [
        0.0,
        1.0,
        3.0,
    ]


def test_apply_arrivals_moves_sessions_and_keeps_their_offsets() -> None:
    requests = [
        _req("a0", "a", 1000.0),
        _req("a1", "a", 5000.0, ("a0",)),
        _req("a2", "a", 1500.0),  # a second root
        _req("b0", "b", 200.0),
        _req("x", None, 300.0),
    ]
    assert list(session_starts_ms(requests)) == ["b", "request:x", "a"]
    moved = apply_arrivals(requests, PoissonArrivals(rate_per_s=1.0, seed=0))
    by_id = {r.request_id: r for r in moved}
    starts = PoissonArrivals(rate_per_s=1.0, seed=0).session_starts_s([0.0] * 3)
    assert by_id["b0"].timestamp_ms == pytest.approx(starts[0] * 1000.0)
    assert by_id["x"].timestamp_ms == pytest.approx(starts[1] * 1000.0, abs=1e-3)
    assert by_id["a0"].timestamp_ms == pytest.approx(starts[2] * 1000.0, abs=1e-3)
    assert by_id["a2"].timestamp_ms - by_id["a0"].timestamp_ms == pytest.approx(500.0)
    assert by_id["a1"].wait_for == ("a0",)


def test_closed_loop_admits_one_per_finished_session() -> None:
    loop = ClosedLoop(["s1", "s2", "s3", "s4"], concurrency=2)
    assert loop.start() == ["s1", "s2"]
    assert loop.on_session_finished("s2") == ["s3"]
    assert loop.live == {"s1", "s3"}
    assert loop.on_session_finished("s1") == ["s4"]
    assert loop.on_session_finished("s3") == [] and not loop.done
    assert loop.on_session_finished("s4") == [] and loop.done
    with pytest.raises(ValueError):
        loop.on_session_finished("s4")


def test_closed_loop_for_a_workload_uses_recorded_order() -> None:
    loop = ClosedLoop.for_workload(
        [_req("a", "late", 900.0), _req("b", "early", 10.0)], concurrency=1
    )
    assert loop.start() == ["early"]


def test_trace_arrivals_from_an_azure_csv(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pythia_server.replay.arrivals import TraceArrivals, read_arrival_times
    from pythia_server.replay.workload import WorkloadError

    path = tmp_path / "azure.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.5000000,374,44\n2023-11-16 18:15:50.0000000,396,109\n"
        "2023-11-16 18:15:47.0000000,10,1\n"
    )
    process = TraceArrivals(read_arrival_times(path), speedup=2.0)
    assert process.session_starts_s([0.0, 0.0, 0.0]) == pytest.approx([0.0, 0.25, 1.75])
    with pytest.raises(ValueError, match="3 arrivals for 4 sessions"):
        process.session_starts_s([0.0] * 4)
    (tmp_path / "bad.csv").write_text("TIMESTAMP\nyesterday\n")
    with pytest.raises(WorkloadError, match="bad.csv:2: bad TIMESTAMP"):
        read_arrival_times(tmp_path / "bad.csv")


def test_trace_arrivals_from_the_recorded_azure_file(shared_workloads) -> None:  # type: ignore[no-untyped-def]
    from pythia_server.replay.arrivals import read_arrival_times

    times = read_arrival_times(shared_workloads / "azure2023_code.csv")
    assert len(times) > 8000 and max(times) - min(times) > 60  # one per request row
