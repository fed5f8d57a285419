"""The seam between cache-hint policies and the engine's radix-cache eviction.

The engine (``pythia_server.engine.radix_cache``) evicts unlocked leaves smallest sort key
first, the way SGLang's ``mem_cache/evict_policy.py`` strategies return a key per node.
A policy bundle with ``cache_hints`` asks the engine to use ``node_sort_key`` instead:

- each radix node remembers the ``CacheOwner`` of the requests that inserted or matched it
  (a small, bounded set: ``MAX_OWNERS_PER_NODE`` most recent), and its last access;
- at eviction time (a moment ``now_s``), the key of a leaf is ``node_sort_key(hints,
  owners, last_access, now_s)``; a leaf whose combined hint is pinned is skipped like a
  locked node (Continuum); the rest are evicted largest steps-to-execution first (KVFlow),
  oldest access first among equals (LRU).

Both functions are pure; they read the hint policy and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable

from pythia_server.policy.types import CacheHintPolicy, CacheOwner, RetentionHint

__all__ = ["MAX_OWNERS_PER_NODE", "NOT_EXPECTED", "combine_hints", "is_pinned", "node_sort_key"]

#: Steps-to-execution of an owner not expected to run again (or unknown): evicted first.
NOT_EXPECTED = 1 << 30
#: How many owners a radix node needs to remember for shared prefixes to be valued right.
MAX_OWNERS_PER_NODE = 8


def combine_hints(hints: Iterable[RetentionHint | None]) -> RetentionHint | None:
    """One hint for a prefix shared by several owners: the latest pin, the nearest step."""
    pinned: float | None = None
    steps: int | None = None
    reasons: list[str] = []
    for hint in hints:
        if hint is None:
            continue
        if hint.pinned_until_s is not None:
            pinned = hint.pinned_until_s if pinned is None else max(pinned, hint.pinned_until_s)
        if hint.steps_to_execution is not None:
            steps = hint.steps_to_execution if steps is None else min(steps, hint.steps_to_execution)
        if hint.reason:
            reasons.append(hint.reason)
    if pinned is None and steps is None:
        return None
    return RetentionHint(pinned, steps, "; ".join(reasons[:2]))


def _combined(policy: CacheHintPolicy, owners: Iterable[CacheOwner], now_s: float) -> RetentionHint | None:
    return combine_hints(policy.retention(owner, now_s) for owner in owners)


def is_pinned(policy: CacheHintPolicy, owners: Iterable[CacheOwner], now_s: float) -> bool:
    """True when the engine must treat the node as locked at ``now_s``."""
    hint = _combined(policy, owners, now_s)
    return hint is not None and hint.pinned_at(now_s)


def node_sort_key(
    policy: CacheHintPolicy, owners: Iterable[CacheOwner], last_access: float, now_s: float
) -> tuple[int, int, float]:
    """Eviction sort key of a radix leaf: smallest is evicted first.

    Pinned leaves sort last (an engine that honours pinning never reaches them); then
    larger steps-to-execution before smaller; then least recently used first.
    """
    hint = _combined(policy, owners, now_s)
    if hint is not None and hint.pinned_at(now_s):
        return (1, 0, last_access)
    steps = NOT_EXPECTED if hint is None or hint.steps_to_execution is None else hint.steps_to_execution
    return (0, -steps, last_access)
