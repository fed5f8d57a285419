"""The workload format: NVIDIA Dynamo's agentic Mooncake JSONL plus Pythia's tags.

One JSON object per line, one line per LLM call. The fields and their meaning follow
Dynamo's mocker (``lib/mocker/src/loadgen/trace.rs``, ``AgenticTrace::from_agentic_mooncake``,
and ``loadgen/driver.rs``), so a file written here replays unchanged under
``python -m dynamo.replay --trace-format agentic_mooncake``:

- ``request_id`` (unique) and ``wait_for`` (request ids this call depends on).
- A call with an empty ``wait_for`` is a *root*: it becomes ready at ``timestamp`` (ms;
  missing means 0). Dynamo ignores ``delay`` / ``tool_wait_ms`` on roots; we reject them.
- A call with dependencies becomes ready ``delay + tool_wait_ms`` milliseconds after the
  *last* of them completes; its ``timestamp`` is informational (the recorded start), as in
  Dynamo's own converter. ``delay`` is think / client time, ``tool_wait_ms`` tool time.
- ``session_id`` is metadata in agentic mode (ordering comes only from ``wait_for``); in
  Pythia it names one run of a workflow (the session tag of the wire protocol), sub-agents included.
- ``hash_ids``: one id per ``block_size`` tokens of the prompt; equal leading ids mean an
  equal prompt prefix. Dynamo synthesises block ``i`` as ``block_size`` copies of token
  ``hash_ids[i]`` truncated to ``input_length`` (see :func:`prompt_token_ids`), so ids must
  fit in 32 bits and ``input_length <= len(hash_ids) * block_size``.
- Pythia's additions: ``workflow_type``, ``agent``, ``parent_agent``, ``phase`` and
  ``block_size`` (written on every row, because Dynamo's loader rejects non-JSON header
  lines; rows without it take the loader's default, 512, Mooncake's block size).

Plain Mooncake rows (no ``request_id``) load too: each row is its own call; rows sharing a
``session_id`` are chained in file order exactly as Dynamo's ``Trace::from_mooncake`` does
(a later turn waits for the previous one, ``delay`` explicit or the timestamp difference).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pythia_server.replay.workload_checks import WorkloadError, validate_workload

__all__ = [
    "MOONCAKE_BLOCK_SIZE",
    "WorkloadError",
    "WorkloadRequest",
    "json_lines",
    "load_workload",
    "ms_from_s",
    "prompt_token_ids",
    "request_to_row",
    "save_workload",
    "session_key",
    "session_keys",
    "validate_workload",
]

MOONCAKE_BLOCK_SIZE = 512


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkloadRequest:
    """One LLM call of a workload; times in milliseconds, lengths in tokens."""

    request_id: str
    session_id: str | None = None
    workflow_type: str | None = None
    agent: str | None = None
    timestamp_ms: float | None = None
    delay_ms: float | None = None
    wait_for: tuple[str, ...] = ()
    tool_wait_ms: float | None = None
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]
    block_size: int = MOONCAKE_BLOCK_SIZE
    parent_agent: str | None = None  # the agent that spawned this one (the parent tag)
    phase: str | None = None  # workflow phase or step name, when the source has one
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_root(self) -> bool:
        return not self.wait_for

    @property
    def dependency_delay_ms(self) -> float:
        """Wait after the last dependency completes (Dynamo's ``dependency_delay_ms``)."""
        return (self.delay_ms or 0.0) + (self.tool_wait_ms or 0.0)


def ms_from_s(seconds: float) -> float:
    """Seconds to milliseconds, rounded to the microsecond the JSON rows keep."""
    return round(seconds * 1000.0, 3)


def prompt_token_ids(request: WorkloadRequest) -> list[int]:
    """The prompt Dynamo's replay synthesises: each hash id repeated ``block_size`` times."""
    tokens: list[int] = []
    for hash_id in request.hash_ids:
        tokens.extend([hash_id] * request.block_size)
        if len(tokens) >= request.input_length:
            break
    return tokens[: request.input_length]


def session_keys(requests: Iterable[WorkloadRequest]) -> list[str]:
    """Session keys in order of first appearance; a call without a session is its own."""
    seen: dict[str, None] = {}
    for request in requests:
        seen.setdefault(session_key(request), None)
    return list(seen)


def session_key(request: WorkloadRequest) -> str:
    """``session_id``, or ``request:<request_id>`` for a call that has no session."""
    return (
        request.session_id
        if request.session_id is not None
        else f"request:{request.request_id}"
    )


# ----------------------------------------------------------------------------- loading


def json_lines(path: Path, lines: Iterable[str]) -> Iterator[tuple[int, Any]]:
    """(line number, decoded value) of each non-blank line of a JSON-lines file; a line
    that is not JSON is a :class:`WorkloadError` naming ``path`` and the line."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise WorkloadError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        yield number, value


def load_workload(
    path: str | Path, *, block_size: int | None = None
) -> list[WorkloadRequest]:
    """Read an agentic Mooncake (or plain Mooncake) JSONL file and validate it.

    ``block_size`` applies to rows without a ``block_size`` field (default 512); a row
    whose own value disagrees with it, or with another row, is an error.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise WorkloadError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    rows: list[tuple[int, dict[str, Any]]] = []
    for number, row in json_lines(path, lines):
        if not isinstance(row, dict):
            raise WorkloadError(f"{path}:{number}: a row must be a JSON object")
        rows.append((number, row))
    if not rows:
        raise WorkloadError(f"{path}: no requests")
    agentic = "request_id" in rows[0][1]
    file_block_size = _file_block_size(path, rows, block_size)
    parse = _parse_agentic_row if agentic else _parse_plain_row
    requests: list[WorkloadRequest] = []
    last_in_session: dict[str, tuple[str, float | None]] = {}
    for number, row in rows:
        where = f"{path}:{number}"
        if agentic != ("request_id" in row):
            raise WorkloadError(
                f"{where}: mixes agentic rows (with request_id) and plain rows"
            )
        requests.append(parse(row, where, file_block_size, number, last_in_session))
    validate_workload(requests, source=str(path), lines=[number for number, _ in rows])
    return requests


def _file_block_size(
    path: Path, rows: list[tuple[int, dict[str, Any]]], given: int | None
) -> int:
    chosen = given
    for number, row in rows:
        value = row.get("block_size")
        if value is None:
            continue
        if not _is_int(value) or value <= 0:
            raise WorkloadError(
                f"{path}:{number}: block_size must be a positive integer"
            )
        if chosen is not None and value != chosen:
            raise WorkloadError(
                f"{path}:{number}: block_size {value} differs from {chosen}"
            )
        chosen = value
    if chosen is not None and chosen <= 0:
        raise WorkloadError(f"{path}: block_size must be positive")
    return chosen or MOONCAKE_BLOCK_SIZE


def _parse_common(row: dict[str, Any], where: str) -> dict[str, Any]:
    hash_ids = row.get("hash_ids")
    if not isinstance(hash_ids, list) or not all(_is_int(h) for h in hash_ids):
        raise WorkloadError(f"{where}: hash_ids must be a list of integers")
    values: dict[str, Any] = {"hash_ids": tuple(hash_ids)}
    for name in ("input_length", "output_length"):
        value = row.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise WorkloadError(f"{where}: {name} must be a non-negative integer")
        values[name] = value
    for name, key in (
        ("timestamp_ms", "timestamp"),
        ("delay_ms", "delay"),
        ("tool_wait_ms", "tool_wait_ms"),
    ):
        value = row.get(key)
        if value is not None and (
            not _is_number(value) or not math.isfinite(value) or value < 0
        ):
            raise WorkloadError(
                f"{where}: {key} must be a finite number >= 0 (milliseconds)"
            )
        values[name] = None if value is None else float(value)
    for name in ("session_id", "workflow_type", "agent", "parent_agent", "phase"):
        value = row.get(name)
        if value is not None and not isinstance(value, str):
            raise WorkloadError(f"{where}: {name} must be a string")
        values[name] = value
    return values


def _parse_agentic_row(
    row: dict[str, Any],
    where: str,
    block_size: int,
    _number: int,
    _last: dict[str, Any],
) -> WorkloadRequest:
    request_id = row.get("request_id")
    if not isinstance(request_id, str) or not request_id.strip():
        raise WorkloadError(f"{where}: request_id must be a non-empty string")
    wait_for = row.get("wait_for", [])
    if not isinstance(wait_for, list) or not all(isinstance(w, str) for w in wait_for):
        raise WorkloadError(f"{where}: wait_for must be a list of request ids")
    values = _parse_common(row, where)
    extra = {k: v for k, v in row.items() if k not in _KNOWN_FIELDS}
    return WorkloadRequest(
        request_id=request_id,
        wait_for=tuple(wait_for),
        block_size=block_size,
        extra=extra,
        **values,
    )


def _parse_plain_row(
    row: dict[str, Any],
    where: str,
    block_size: int,
    number: int,
    last_in_session: dict[str, tuple[str, float | None]],
) -> WorkloadRequest:
    """A Mooncake row; same-session rows chain as in Dynamo's ``Trace::from_mooncake``."""
    if "wait_for" in row:
        raise WorkloadError(f"{where}: wait_for needs a request_id on every row")
    values = _parse_common(row, where)
    request_id = f"line-{number}"
    session_id = values["session_id"]
    if session_id is None:
        if values["delay_ms"]:
            raise WorkloadError(
                f"{where}: delay without session_id has nothing to follow"
            )
        values["delay_ms"] = None
        return WorkloadRequest(request_id=request_id, block_size=block_size, **values)
    previous = last_in_session.get(session_id)
    timestamp = values["timestamp_ms"]
    if previous is None:
        if values["delay_ms"]:
            raise WorkloadError(
                f"{where}: delay on the first turn of session {session_id}"
            )
        values["delay_ms"] = None
        last_in_session[session_id] = (request_id, timestamp)
        return WorkloadRequest(request_id=request_id, block_size=block_size, **values)
    previous_id, previous_timestamp = previous
    if values["delay_ms"] is None:
        if timestamp is not None and previous_timestamp is not None:
            if timestamp < previous_timestamp:
                raise WorkloadError(
                    f"{where}: timestamp goes back within session {session_id}"
                )
            values["delay_ms"] = timestamp - previous_timestamp
        else:
            values["delay_ms"] = 0.0
    last_in_session[session_id] = (
        request_id,
        timestamp if timestamp is not None else previous_timestamp,
    )
    return WorkloadRequest(
        request_id=request_id, wait_for=(previous_id,), block_size=block_size, **values
    )


_KNOWN_FIELDS = frozenset(
    {
        "request_id",
        "session_id",
        "workflow_type",
        "agent",
        "timestamp",
        "delay",
        "wait_for",
        "tool_wait_ms",
        "input_length",
        "output_length",
        "hash_ids",
        "block_size",
        "parent_agent",
        "phase",
    }
)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ----------------------------------------------------------------------------- saving


def request_to_row(request: WorkloadRequest) -> dict[str, Any]:
    """The JSON object for one call; ``None`` fields and empty ``wait_for`` are omitted."""
    row: dict[str, Any] = {"request_id": request.request_id}
    optional = {
        "session_id": request.session_id,
        "workflow_type": request.workflow_type,
        "agent": request.agent,
        "parent_agent": request.parent_agent,
        "phase": request.phase,
        "timestamp": _ms(request.timestamp_ms),
        "delay": _ms(request.delay_ms),
        "tool_wait_ms": _ms(request.tool_wait_ms),
    }
    row.update({k: v for k, v in optional.items() if v is not None})
    if request.wait_for:
        row["wait_for"] = list(request.wait_for)
    row["input_length"] = request.input_length
    row["output_length"] = request.output_length
    row["block_size"] = request.block_size
    row["hash_ids"] = list(request.hash_ids)
    for key, value in request.extra.items():
        row.setdefault(key, value)
    return row


def _ms(value: float | None) -> float | int | None:
    if value is None:
        return None
    rounded = round(value, 3)
    return int(rounded) if rounded == int(rounded) else rounded


def save_workload(requests: Sequence[WorkloadRequest], path: str | Path) -> None:
    """Validate, then write one JSON row per call (agentic Mooncake, Dynamo-loadable)."""
    validate_workload(requests, source=str(path))
    path = Path(path)
    with path.open("w", encoding="utf-8") as out:
        for request in requests:
            out.write(json.dumps(request_to_row(request), separators=(",", ":")))
            out.write("\n")
