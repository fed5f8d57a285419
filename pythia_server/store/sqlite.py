"""SQLite store: WAL, one writer thread, batched writes off the request path.

The gateway calls :meth:`Store.record_call` on its hot path; that only puts the record
on a queue. A single writer thread wakes every ``flush_interval_s`` and commits what
is queued in transactions of at most ``batch_rows`` rows, keeps the sessions table up
to date and ends idle sessions. :meth:`Store.flush` wakes it at once and waits.
Readers use their own connections (WAL lets them read while the writer writes);
:class:`StoreReader` opens a file read-only for ``pythia-server report --db``.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import astuple
from pathlib import Path
from typing import Any

from pythia_server.store.records import CallRecord, SessionRecord, pack_hashes, unpack_hashes
from pythia_server.store.schema import CALL_COLUMNS, SCHEMA, SCHEMA_VERSION, SPAN_COLUMNS

__all__ = ["Store", "StoreReader"]

log = logging.getLogger(__name__)

_INSERT_CALL = (
    f"INSERT OR REPLACE INTO calls ({', '.join(CALL_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(CALL_COLUMNS))})"
)
_UPSERT_SESSION = """
INSERT INTO sessions (workflow, session, first_call_at, last_call_at, ended_at, end_reason, jct_s, calls)
VALUES (?, ?, ?, ?, NULL, NULL, ?, 1)
ON CONFLICT (workflow, session) DO UPDATE SET
    first_call_at = min(first_call_at, excluded.first_call_at),
    last_call_at = max(last_call_at, excluded.last_call_at),
    jct_s = max(last_call_at, excluded.last_call_at) - min(first_call_at, excluded.first_call_at),
    calls = calls + 1,
    ended_at = CASE WHEN end_reason = 'idle' THEN NULL ELSE ended_at END,
    end_reason = CASE WHEN end_reason = 'idle' THEN NULL ELSE end_reason END
"""
_END_SESSION = (
    "UPDATE sessions SET ended_at = ?, end_reason = ? "
    "WHERE (workflow = ? OR ? IS NULL) AND session = ? AND ended_at IS NULL"
)
_END_IDLE = (
    "UPDATE sessions SET ended_at = last_call_at, end_reason = 'idle' "
    "WHERE ended_at IS NULL AND last_call_at < ?"
)
_INSERT_SPAN = (
    f"INSERT OR IGNORE INTO spans ({', '.join(SPAN_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(SPAN_COLUMNS))})"
)


def _connect(path: str, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def _call_row(rec: CallRecord) -> tuple[Any, ...]:
    values = astuple(rec)
    return values[:-1] + (pack_hashes(rec.block_hashes),)


def _call_from_row(row: Sequence[Any]) -> CallRecord:
    values = list(row)
    values[CALL_COLUMNS.index("stream")] = bool(values[CALL_COLUMNS.index("stream")])
    values[-1] = unpack_hashes(values[-1])
    return CallRecord(*values)


def _span_row(span: Any) -> tuple[Any, ...]:
    """A SpanRecord (gateway/otlp.py) as a row; read by attribute so the store needs no import."""
    import json

    row = []
    for column in SPAN_COLUMNS:
        value = getattr(span, column, None)
        if column == "attributes":
            value = json.dumps(dict(value or {}), sort_keys=True, default=str)
        row.append(value)
    return tuple(row)


class StoreReader:
    """Queries over a store file; safe to use while a writer runs (WAL)."""

    def __init__(self, path: str, *, readonly: bool = True) -> None:
        if readonly and not Path(path).exists():
            raise FileNotFoundError(f"no such database: {path}")
        self.path = path
        self._conn = _connect(path, readonly=readonly)
        self._lock = threading.Lock()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def calls(self, workflow: str | None = None, session: str | None = None,
              limit: int | None = None, *, latest: bool = False) -> list[CallRecord]:
        """Call records, oldest first; ``workflow=""`` selects untagged calls.

        With ``limit``, the first ``limit`` calls, or the last ones when ``latest``.
        """
        where, params = _filters(workflow=workflow, session=session)
        order = "DESC" if latest else "ASC"
        sql = (f"SELECT {', '.join(CALL_COLUMNS)} FROM calls{where} "
               f"ORDER BY started_at {order}, call_id {order}")
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        rows = [_call_from_row(r) for r in self._query(sql, params)]
        return rows[::-1] if latest else rows

    def sessions(self, workflow: str | None = None) -> list[SessionRecord]:
        where, params = _filters(workflow=workflow)
        rows = self._query(
            "SELECT workflow, session, first_call_at, last_call_at, ended_at, jct_s, calls "
            f"FROM sessions{where} ORDER BY first_call_at", params)
        return [SessionRecord(*r) for r in rows]

    def spans(self, session: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        where, params = _filters(session=session)
        sql = f"SELECT {', '.join(SPAN_COLUMNS)} FROM spans{where} ORDER BY start_ns"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return [dict(zip(SPAN_COLUMNS, r)) for r in self._query(sql, params)]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _filters(**conditions: str | None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in conditions.items():
        if value is None:
            continue
        if value == "" and column == "workflow":
            clauses.append("workflow IS NULL")
        else:
            clauses.append(f"{column} = ?")
            params.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


class Store(StoreReader):
    """The gateway's store: non-blocking writes through one writer thread."""

    def __init__(self, path: str, *, batch_rows: int = 512, flush_interval_s: float = 0.1,
                 session_idle_timeout_s: float = 600.0,
                 clock: Callable[[], float] = time.time) -> None:
        if path == ":memory:" or path.startswith("file:"):
            raise ValueError("the store needs a file path (its reader and writer use separate connections)")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        writer = _connect(path)
        writer.executescript(SCHEMA)
        writer.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                       (str(SCHEMA_VERSION),))
        writer.commit()
        super().__init__(path, readonly=False)
        self._writer = writer
        self._batch_rows = batch_rows
        self._flush_interval_s = flush_interval_s
        self._idle_timeout_s = session_idle_timeout_s
        self._clock = clock
        self._queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._closed = False
        self._last_sweep = 0.0
        self.write_errors = 0
        self._thread = threading.Thread(target=self._run, name="pythia-store-writer", daemon=True)
        self._thread.start()

    # -- the hot path: enqueue only ------------------------------------------------------

    def record_call(self, record: CallRecord) -> None:
        self._queue.put(("call", record))

    def record_spans(self, spans: Iterable[Any]) -> None:
        self._queue.put(("spans", list(spans)))

    def end_session(self, workflow: str | None, session: str, ended_at: float, reason: str = "span") -> None:
        """End a session (its root workflow span closed); idle sweeps leave it alone after.

        ``workflow=None`` ends the session of that id in every workflow. A session the
        store has no call for yet is not created (TODO(lead): keep early ends if spans
        ever overtake call records).
        """
        self._queue.put(("end", (ended_at, reason, workflow, workflow, session)))

    # -- control ---------------------------------------------------------------------------

    def flush(self, timeout_s: float | None = 10.0) -> bool:
        """Block until everything queued before this call is committed."""
        if self._closed:
            return True
        done = threading.Event()
        self._queue.put(("flush", done))
        self._wake.set()
        return done.wait(timeout_s)

    def close(self) -> None:
        """Commit everything queued, stop the writer, close connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(("stop", None))
        self._wake.set()
        self._thread.join(timeout=30)
        self._writer.close()
        super().close()

    # -- the writer thread -------------------------------------------------------------

    def _run(self) -> None:
        """Wake every ``flush_interval_s`` (or when asked), write everything queued, repeat.

        Producers never wake this thread per record: handing the GIL to a writer for
        every call cost more than the write itself.
        """
        stop = False
        while not stop:
            self._wake.wait(self._flush_interval_s)
            self._wake.clear()
            while not stop:
                batch: list[tuple[str, Any]] = []
                while len(batch) < self._batch_rows:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                if not batch:
                    break
                stop = self._write(batch)
            self._sweep_idle()

    def _write(self, batch: list[tuple[str, Any]]) -> bool:
        """Commit a batch; if it fails, commit item by item so one bad record loses only itself."""
        try:
            self._commit(batch)
        except Exception:  # the writer thread must survive anything
            log.exception("store: a batch of %d items failed; retrying one by one", len(batch))
            for item in batch:
                try:
                    self._commit([item])
                except Exception:
                    self.write_errors += 1
                    log.exception("store: dropped one %s record", item[0])
        stop = False
        for kind, item in batch:
            if kind == "flush":
                item.set()
            elif kind == "stop":
                stop = True
        return stop

    def _commit(self, batch: list[tuple[str, Any]]) -> None:
        calls = [item for kind, item in batch if kind == "call"]
        with self._writer:
            if calls:
                self._writer.executemany(_INSERT_CALL, [_call_row(c) for c in calls])
                self._writer.executemany(_UPSERT_SESSION, [
                    (c.workflow, c.session, c.started_at, c.finished_at, c.finished_at - c.started_at)
                    for c in calls if c.workflow and c.session])
            for kind, item in batch:
                if kind == "spans" and item:
                    self._writer.executemany(_INSERT_SPAN, [_span_row(s) for s in item])
                elif kind == "end":
                    self._writer.execute(_END_SESSION, item)

    def _sweep_idle(self) -> None:
        now = self._clock()
        if now - self._last_sweep < 1.0:
            return
        self._last_sweep = now
        try:
            with self._writer:
                self._writer.execute(_END_IDLE, (now - self._idle_timeout_s,))
        except sqlite3.Error:
            self.write_errors += 1
            log.exception("store: idle-session sweep failed")
