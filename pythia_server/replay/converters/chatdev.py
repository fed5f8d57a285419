"""ChatDev call logs (``chatdev_calls.jsonl``) to the workload format.

Assumptions, each also in docs/workloads.md:

1. **Sessions.** One ChatDev run (``workflow``) is one session, ``workflow_type``
   ``"chatdev"``, ``agent`` = the speaking role, ``phase`` = the ChatDev phase. Rows are
   taken in file order; when ``seq`` goes back within one run name (two logs that share a
   name), a new session ``NAME#2`` starts.
2. **Dependencies.** Strictly sequential: every call waits for the previous call of its run
   (ChatDev runs one chat at a time). The first call of a run is the session's root; its
   ``timestamp`` is its ``t_send`` in ms after the earliest ``t_send`` in the file
   (recorded arrivals; the runs are days apart, so re-time them with an arrival process).
3. **Gaps.** The gap ``t_send - previous t_recv`` becomes the wait after the dependency.
   Times have 1 s resolution, so gaps are whole seconds; a negative gap (a send logged
   before the previous receive, seen with ``t_send_exact`` false or overlapping log lines)
   becomes 0. Where ``t_send_exact`` is false the send time is the previous log line's, so
   the gap is a lower bound. Gaps before a ``Test*`` phase call are code execution (running
   the generated program, including ChatDev's built-in 2 s "app did not start" sleeps) and
   go to ``tool_wait_ms``; other gaps are client-side processing and go to ``delay``.
4. **Prefixes.** A prompt is [the speaker's role system prompt] + [the phase conversation].
   The speaker's system prompt id is ``a_prompt_id`` when it speaks as the phase's
   assistant, ``u_prompt_id`` as its user (the role name where the log has no ids); the same
   id in two runs is the same text, so its blocks are shared across sessions. Its length is
   not recorded: it is taken as ``system_tokens`` (default 250, about the size of ChatDev's
   RoleConfig prompts) but never more than the shortest prompt that uses it.
   Inside one *phase instance* (consecutive calls of a run with the same phase) each speaker
   keeps its own chat history, so a speaker's later call extends its previous prompt in
   that instance: the previous prompt's whole blocks are reused when the prompt grew, and
   only the system prompt otherwise. Two speakers share nothing (their system prompts come
   first and differ), and a new phase instance starts a new chat (only the system prompt
   and the phase's prompt of point 5 are shared). This under-counts reuse of text repeated across phases (the task,
   the code), which the log cannot identify. In this file a speaker rarely speaks twice
   in one phase instance (21 of 984 calls), so reuse is mostly the role prompts.
   ``history="shared"`` instead lets every call of a phase instance extend the previous
   call's prompt whatever the speaker: an optimistic upper bound (it pretends the other
   speaker's system prompt is not in front of the shared history).
5. **Phase prompts.** ChatDev opens every phase instance with that phase's prompt
   (``PhaseConfig.json``) right after the speaker's system prompt, with the run's task,
   modality, language and ideas filled in; the code and comments that follow change
   between instances. So inside one run, every instance of a phase starts, for the same
   speaker, with the same ``phase_prompt_tokens`` tokens after the system prompt (default
   32: about the phase's opening sentence, shorter than any filled-in phase prompt).
   Across runs that text follows a different task (ChatDev's role prompts name the task
   after their first 150 to 200 tokens, about the 3 whole blocks of point 4), so it is not
   shared between sessions. The recorded ``phase`` identifies it; a live
   gateway sees the same repetition in the prompt's blocks. ``phase_prompt_tokens=0``
   drops it (every phase instance then starts fresh after the system prompt).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pythia_server.replay.blocks import HashIdAllocator, SharedPrefixes, extend_prompt
from pythia_server.replay.workload import (
    WorkloadError,
    WorkloadRequest,
    json_lines,
    ms_from_s,
)

__all__ = ["ChatDevOptions", "convert_chatdev", "read_chatdev"]

WORKFLOW_TYPE = "chatdev"
_TEST_PHASE_PREFIX = "Test"


@dataclass(frozen=True, slots=True)
class ChatDevOptions:
    block_size: int = 64
    system_tokens: int = 250
    history: str = "per-speaker"  # or "shared" (upper bound), see the module docstring
    phase_prompt_tokens: int = (
        32  # a phase's prompt head, repeated within a run (point 5)
    )


def read_chatdev(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ChatDev calls file, each checked for the fields the converter reads."""
    rows: list[dict[str, Any]] = []
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, row in json_lines(path, lines):
        for name in (
            "workflow",
            "t_send",
            "t_recv",
            "prompt_tokens",
            "completion_tokens",
            "seq",
        ):
            if not isinstance(row, dict) or row.get(name) is None:
                raise WorkloadError(f"{path}:{number}: ChatDev row is missing {name!r}")
        rows.append(row)
    if not rows:
        raise WorkloadError(f"{path}: no ChatDev calls")
    return rows


def convert_chatdev(
    rows: Iterable[dict[str, Any]], options: ChatDevOptions | None = None
) -> list[WorkloadRequest]:
    options = options or ChatDevOptions()
    if options.phase_prompt_tokens < 0:
        raise WorkloadError(
            f"phase_prompt_tokens must be >= 0, not {options.phase_prompt_tokens}"
        )
    if options.history not in ("per-speaker", "shared"):
        raise WorkloadError(
            f"history must be 'per-speaker' or 'shared', not {options.history!r}"
        )
    runs = _split_runs(rows)
    t0_s = min(float(row["t_send"]) for calls in runs.values() for row in calls)
    system_min = _shortest_prompt_per_system_prompt(runs.values())
    allocator = HashIdAllocator()
    shared = SharedPrefixes(allocator, options.block_size)
    out: list[WorkloadRequest] = []
    for session_id, calls in runs.items():
        # (speaker's system prompt, phase) -> (tokens, ids) of system prompt + phase head.
        phase_heads: dict[tuple[tuple[str, str], Any], tuple[int, tuple[int, ...]]] = {}
        previous: dict[str, Any] | None = None
        histories: dict[
            str, tuple[int, tuple[int, ...]]
        ] = {}  # speaker -> (tokens, ids)
        for row in calls:
            speaker = str(row.get("agent") or "unknown")
            chain = speaker if options.history == "per-speaker" else "phase"
            phase = row.get("phase")
            if previous is None or phase != previous.get("phase"):
                histories = {}
            input_length = int(row["prompt_tokens"])
            system_key = _system_prompt_key(row)
            system_tokens = min(options.system_tokens, system_min[system_key])
            system_ids = shared.blocks(system_key, system_tokens)
            history = histories.get(chain)
            if history is not None and input_length >= history[0]:
                hash_ids = extend_prompt(
                    history[1], history[0], input_length, options.block_size, allocator
                )
            else:
                head_tokens, head_ids = system_tokens, system_ids
                if options.phase_prompt_tokens > 0:
                    head = phase_heads.get((system_key, phase))
                    if head is None:
                        tokens = min(
                            input_length, system_tokens + options.phase_prompt_tokens
                        )
                        ids = extend_prompt(
                            system_ids,
                            system_tokens,
                            tokens,
                            options.block_size,
                            allocator,
                        )
                        head = phase_heads[(system_key, phase)] = (tokens, ids)
                    head_tokens, head_ids = head
                hash_ids = extend_prompt(
                    head_ids,
                    min(head_tokens, input_length),
                    input_length,
                    options.block_size,
                    allocator,
                )
            histories[chain] = (input_length, hash_ids)
            request_id = f"{session_id}:{row['seq']}"
            common: dict[str, Any] = {
                "request_id": request_id,
                "session_id": session_id,
                "workflow_type": WORKFLOW_TYPE,
                "agent": speaker,
                "phase": phase,
                "timestamp_ms": ms_from_s(float(row["t_send"]) - t0_s),
                "input_length": input_length,
                "output_length": int(row["completion_tokens"]),
                "hash_ids": hash_ids,
                "block_size": options.block_size,
            }
            if previous is None:
                out.append(WorkloadRequest(**common))
            else:
                gap_ms = ms_from_s(
                    max(0.0, float(row["t_send"]) - float(previous["t_recv"]))
                )
                is_tool = str(phase or "").startswith(_TEST_PHASE_PREFIX)
                out.append(
                    WorkloadRequest(
                        **common,
                        wait_for=(f"{session_id}:{previous['seq']}",),
                        delay_ms=0.0 if is_tool else gap_ms,
                        tool_wait_ms=gap_ms if is_tool else None,
                    )
                )
            previous = row
    return out


def _split_runs(rows: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Runs in file order; a run name whose ``seq`` restarts becomes ``NAME#2``, ``NAME#3``."""
    runs: dict[str, list[dict[str, Any]]] = {}
    current: dict[str, str] = {}
    copies: dict[str, int] = {}
    for row in rows:
        name = str(row["workflow"])
        key = current.get(name)
        if key is None or int(row["seq"]) <= int(runs[key][-1]["seq"]):
            copies[name] = copies.get(name, 0) + 1
            key = name if copies[name] == 1 else f"{name}#{copies[name]}"
            current[name] = key
            runs[key] = []
        runs[key].append(row)
    return runs


def _system_prompt_key(row: dict[str, Any]) -> tuple[str, str]:
    agent = row.get("agent")
    if (
        agent is not None
        and agent == row.get("assistant_role")
        and row.get("a_prompt_id")
    ):
        return ("prompt", str(row["a_prompt_id"]))
    if agent is not None and agent == row.get("user_role") and row.get("u_prompt_id"):
        return ("prompt", str(row["u_prompt_id"]))
    return ("role", str(agent))


def _shortest_prompt_per_system_prompt(
    runs: Iterable[list[dict[str, Any]]],
) -> dict[tuple[str, str], int]:
    shortest: dict[tuple[str, str], int] = {}
    for calls in runs:
        for row in calls:
            key = _system_prompt_key(row)
            shortest[key] = min(
                shortest.get(key, int(row["prompt_tokens"])), int(row["prompt_tokens"])
            )
    return shortest
