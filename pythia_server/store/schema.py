"""The SQLite schema. Column order of ``calls`` follows :class:`CallRecord` field order."""

from __future__ import annotations

from dataclasses import fields

from pythia_server.store.records import CallRecord

__all__ = ["CALL_COLUMNS", "SCHEMA", "SCHEMA_VERSION", "SPAN_COLUMNS"]

SCHEMA_VERSION = 1

CALL_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(CallRecord))

#: Columns of the spans table; each is read by attribute from H3's ``SpanRecord``
#: (pythia_server/gateway/otlp.py). ``attributes`` is a bounded dict stored as JSON.
SPAN_COLUMNS: tuple[str, ...] = (
    "trace_id", "span_id", "parent_span_id", "name", "start_ns", "end_ns", "status",
    "operation", "workflow", "session", "agent", "model", "input_tokens", "output_tokens",
    "tool_name", "attributes",
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS calls (
    call_id TEXT PRIMARY KEY,
    workflow TEXT,            -- NULL: the call carried no workflow tag ("(untagged)")
    session TEXT,
    agent TEXT,
    parent TEXT,
    call_tag TEXT,
    model TEXT,
    replica TEXT,
    route TEXT NOT NULL,
    stream INTEGER NOT NULL,
    prompt_tokens INTEGER,
    cached_tokens INTEGER,
    output_tokens INTEGER,
    queue_ms REAL,
    ttft_ms REAL,
    e2e_ms REAL,
    finish_reason TEXT,
    status TEXT NOT NULL,     -- ok | error | aborted
    error TEXT,
    started_at REAL NOT NULL, -- Unix seconds
    finished_at REAL NOT NULL,
    block_size INTEGER NOT NULL,
    block_hashes BLOB         -- little-endian uint64 chained prefix-block hashes; never text
);
CREATE INDEX IF NOT EXISTS calls_by_session ON calls (workflow, session, started_at);
CREATE INDEX IF NOT EXISTS calls_by_time ON calls (started_at);

CREATE TABLE IF NOT EXISTS sessions (
    workflow TEXT NOT NULL,
    session TEXT NOT NULL,
    first_call_at REAL NOT NULL,
    last_call_at REAL NOT NULL,  -- the last call's end
    ended_at REAL,               -- NULL while live
    end_reason TEXT,             -- span (root workflow span ended) | idle
    jct_s REAL NOT NULL,         -- last_call_at - first_call_at
    calls INTEGER NOT NULL,
    PRIMARY KEY (workflow, session)
);

CREATE TABLE IF NOT EXISTS spans (
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT,
    name TEXT,
    start_ns INTEGER,
    end_ns INTEGER,
    status TEXT,
    operation TEXT,
    workflow TEXT,
    session TEXT,
    agent TEXT,
    model TEXT,
    input_tokens INTEGER,
    output_tokens INTEGER,
    tool_name TEXT,
    attributes TEXT,             -- JSON object of pythia.* / gen_ai.* attributes, no content
    PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX IF NOT EXISTS spans_by_session ON spans (session, start_ns);
"""
