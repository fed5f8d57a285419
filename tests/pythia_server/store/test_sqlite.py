from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from pythia_server.store.records import CallRecord, pack_hashes, unpack_hashes
from pythia_server.store.sqlite import Store, StoreReader


def call(call_id: str, *, workflow: str | None = "wf", session: str | None = "s1", agent: str | None = "a",
         started_at: float = 100.0, e2e_s: float = 1.0, **changes: object) -> CallRecord:
    record = CallRecord(
        call_id=call_id, workflow=workflow, session=session, agent=agent, parent=None, call_tag=None,
        model="m", replica="r0", route="chat", stream=False, prompt_tokens=100, cached_tokens=40,
        output_tokens=10, queue_ms=0.5, ttft_ms=None, e2e_ms=e2e_s * 1000, finish_reason="stop", status="ok",
        error=None, started_at=started_at, finished_at=started_at + e2e_s, block_size=64,
        block_hashes=(1, 2**64 - 1, 12345678901234567890))
    return replace(record, **changes)


class Clock:
    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def test_hash_blob_round_trips_full_64_bit_values() -> None:
    hashes = (0, 1, 2**63, 2**64 - 1)
    assert unpack_hashes(pack_hashes(hashes)) == hashes
    assert len(pack_hashes(hashes)) == 32 and unpack_hashes(None) == ()


def test_calls_and_sessions_round_trip(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"), clock=Clock(110.0))
    store.record_call(call("c1", started_at=100.0, e2e_s=2.0))
    store.record_call(call("c2", started_at=105.0, e2e_s=1.0, agent="b", stream=True, ttft_ms=12.5))
    store.record_call(call("c3", workflow=None, session=None, agent=None))
    assert store.flush()
    calls = store.calls()
    assert [c.call_id for c in calls] == ["c1", "c3", "c2"]  # by start time
    assert calls[2] == call("c2", started_at=105.0, e2e_s=1.0, agent="b", stream=True, ttft_ms=12.5)
    assert [c.call_id for c in store.calls(workflow="")] == ["c3"]
    assert [c.call_id for c in store.calls(workflow="wf", session="s1")] == ["c1", "c2"]
    (session,) = store.sessions()
    assert (session.workflow, session.session, session.calls) == ("wf", "s1", 2)
    assert (session.first_call_at, session.last_call_at, session.jct_s) == (100.0, 106.0, 6.0)
    assert session.ended_at is None
    store.close()
    store.close()  # idempotent


def test_a_session_ends_by_span_and_stays_ended(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"), clock=Clock(110.0))
    store.record_call(call("c1"))
    store.end_session("wf", "s1", 150.0)
    store.flush()
    assert store.sessions()[0].ended_at == 150.0
    store.end_session("wf", "s1", 999.0)  # a second end does not move it
    store.flush()
    assert store.sessions()[0].ended_at == 150.0
    store.close()


def test_idle_sessions_end_and_reopen_on_a_new_call(tmp_path: Path) -> None:
    clock = Clock(1000.0)
    store = Store(str(tmp_path / "s.db"), session_idle_timeout_s=60.0, flush_interval_s=0.01, clock=clock)
    store.record_call(call("c1", started_at=900.0))  # ended at 901: 99 s idle
    store.record_call(call("c2", session="s2", started_at=990.0))  # 9 s idle
    store.flush()
    clock.now_s = 1000.5
    store.record_call(call("c3", session="s3", started_at=999.0))
    store.flush()

    def ended() -> dict[str, float | None]:
        store.flush()
        return {s.session: s.ended_at for s in store.sessions()}

    deadline = 200
    while ended()["s1"] is None and deadline:
        clock.now_s += 0.5
        deadline -= 1
    assert ended()["s1"] == 901.0 and ended()["s2"] is None
    store.record_call(call("c4", started_at=1100.0))  # s1 comes back: live again
    assert ended()["s1"] is None
    assert {s.session: s.calls for s in store.sessions()}["s1"] == 2
    store.close()


@dataclass(frozen=True)
class FakeSpan:
    trace_id: str
    span_id: str
    name: str = "invoke_workflow research"
    operation: str = "invoke_workflow"
    session: str = "s1"
    start_ns: int = 1
    end_ns: int = 2
    attributes: dict[str, object] = field(default_factory=lambda: {"pythia.k": 1})


def test_spans_are_stored_by_attribute_once(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    store.record_spans([FakeSpan("t", "a"), FakeSpan("t", "b")])
    store.record_spans([FakeSpan("t", "a")])  # a re-sent span is not duplicated
    store.flush()
    spans = store.spans(session="s1")
    assert [s["span_id"] for s in spans] == ["a", "b"]
    assert spans[0]["attributes"] == '{"pythia.k": 1}' and spans[0]["model"] is None
    store.close()


def test_many_rows_survive_close_and_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    store = Store(path, batch_rows=64)
    for i in range(1000):
        store.record_call(call(f"c{i:04d}", session=f"s{i % 10}", started_at=float(i)))
    store.close()  # commits everything queued
    reader = StoreReader(path)
    assert len(reader.calls()) == 1000
    assert sorted(s.calls for s in reader.sessions()) == [100] * 10
    assert [c.call_id for c in reader.calls(limit=2)] == ["c0000", "c0001"]
    assert [c.call_id for c in reader.calls(limit=2, latest=True)] == ["c0998", "c0999"]
    reader.close()
    again = Store(path)  # the schema is created only once
    again.record_call(call("extra"))
    again.flush()
    assert len(again.calls()) == 1001
    again.close()


def test_reader_refuses_a_missing_file_and_is_read_only(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        StoreReader(str(tmp_path / "nothing.db"))
    path = str(tmp_path / "s.db")
    Store(path).close()
    reader = StoreReader(path)
    with pytest.raises(sqlite3.OperationalError):
        reader._query("DELETE FROM calls")
    reader.close()


def test_a_bad_record_loses_only_itself(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"), clock=Clock(110.0))
    store.record_call(call("good-1"))
    store.record_call(call("bad", block_hashes=("not a hash",)))  # type: ignore[arg-type]
    store.record_call(call("good-2"))
    assert store.flush()
    assert [c.call_id for c in store.calls()] == ["good-1", "good-2"]
    assert store.write_errors == 1
    store.record_call(call("after"))  # the writer is still alive
    store.flush()
    assert len(store.calls()) == 3
    store.close()
