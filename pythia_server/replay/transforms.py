"""Whole-workload transforms: keep the first sessions, replicate sessions to scale up.

Replication makes, for example, 10,000 ChatDev-sized runs from the 40 recorded ones: each
copy gets new session and request ids, and new hash ids for every block that only its
own session used, while blocks shared between sessions (role prompts, system prompts and
tool schemas) keep their ids, so copies share what the originals shared and nothing more.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace

from pythia_server.replay.workload import (
    WorkloadError,
    WorkloadRequest,
    session_key,
    session_keys,
)

__all__ = [
    "first_sessions",
    "replicate_sessions",
    "resize_sessions",
    "split_sessions",
]

_MAX_HASH_ID = 2**32 - 1


def first_sessions(
    requests: Sequence[WorkloadRequest], limit: int
) -> list[WorkloadRequest]:
    """The calls of the first ``limit`` sessions (file order)."""
    if limit <= 0:
        raise ValueError("the number of sessions must be positive")
    keep = set(session_keys(requests)[:limit])
    return [r for r in requests if session_key(r) in keep]


def replicate_sessions(
    requests: Sequence[WorkloadRequest], copies: int
) -> list[WorkloadRequest]:
    """``copies`` copies of the workload (copy 0 is the original), session after session.

    Copy ``c`` renames session ``S`` to ``S~c`` and request ``R`` to ``R~c``; its timestamps
    are unchanged (apply an arrival process afterwards to spread the sessions).
    """
    if copies <= 0:
        raise ValueError("copies must be positive")
    if copies == 1:
        return list(requests)
    users: dict[int, set[str]] = defaultdict(set)
    for r in requests:
        for hash_id in r.hash_ids:
            users[hash_id].add(session_key(r))
    private = sorted(h for h, sessions in users.items() if len(sessions) == 1)
    next_id = max(users, default=0) + 1
    if next_id + len(private) * (copies - 1) > _MAX_HASH_ID:
        raise WorkloadError(f"{copies} copies need more than 2**32 hash ids")
    out = list(requests)
    for copy in range(1, copies):
        remap = {h: next_id + i for i, h in enumerate(private)}
        next_id += len(private)
        suffix = f"~{copy}"
        for r in requests:
            out.append(
                replace(
                    r,
                    request_id=r.request_id + suffix,
                    session_id=None if r.session_id is None else r.session_id + suffix,
                    wait_for=tuple(d + suffix for d in r.wait_for),
                    hash_ids=tuple(remap.get(h, h) for h in r.hash_ids),
                )
            )
    return out


def split_sessions(
    requests: Sequence[WorkloadRequest], train_fraction: float
) -> tuple[list[WorkloadRequest], list[WorkloadRequest]]:
    """The calls of the first ``train_fraction`` of the sessions (file order, at least
    one session) and those of the rest: a held-out split for learning policies."""
    keys = session_keys(requests)
    train_keys = set(keys[: max(1, int(len(keys) * train_fraction))])
    train = [r for r in requests if session_key(r) in train_keys]
    test = [r for r in requests if session_key(r) not in train_keys]
    return train, test


def resize_sessions(
    requests: Sequence[WorkloadRequest], sessions: int
) -> list[WorkloadRequest]:
    """Exactly ``sessions`` sessions: the workload's replicated (fresh ids), then cut."""
    have = len(session_keys(requests))
    return first_sessions(replicate_sessions(requests, -(-sessions // have)), sessions)
