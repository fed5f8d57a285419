"""Eviction orders for the radix cache: SGLang's built-in sort keys and caller-supplied pins.

Mirrors SGLang's ``mem_cache/evict_policy.py``: each strategy is a sort key over a node,
smallest evicted first. A caller's ``EvictionKey`` (cache-hint policies) may instead pin
a node; ``pinned_tokens`` says how much unlocked cache such pins hold. The tree itself
(``engine/radix_cache.py``) does the evicting.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable

from pythia_server.engine.radix_node import TreeNode

__all__ = ["EVICTION_POLICIES", "EvictionKey", "pinned_tokens", "wants_depth"]

# Sort keys for eviction, smallest evicted first (SGLang mem_cache/evict_policy.py). Leaves
# an open session refers to go after all others (the session radix cache).
EVICTION_POLICIES: dict[str, Callable[[TreeNode], tuple[int, ...]]] = {
    "lru": lambda n: (n.session_refs > 0, n.last_access),
    "lfu": lambda n: (n.session_refs > 0, n.hit_count, n.last_access),
    "priority": lambda n: (n.session_refs > 0, n.priority, n.last_access),
}


#: A caller-supplied eviction order (cache-hint policies): (owners, last_access, now_s) ->
#: sort key, smallest evicted first, or None for "pinned: treat as locked". A key that
#: accepts a ``depth_tokens`` keyword (or ``**kwargs``) is also given the node's depth:
#: tokens from the root to the node's end (a role prompt near the root is shallow, a
#: session's history deep); three-argument keys are called as before.
EvictionKey = Callable[..., tuple | None]


def wants_depth(key: Callable[..., object]) -> bool:
    """Whether ``key`` takes the ``depth_tokens`` keyword (checked once, not per call)."""
    try:
        params = inspect.signature(key).parameters.values()
    except (TypeError, ValueError):  # some builtins and C callables have no signature
        return False
    return any(
        p.kind is p.VAR_KEYWORD or (p.name == "depth_tokens" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
        for p in params
    )


def pinned_tokens(leaves: Iterable[TreeNode], root: TreeNode, is_pinned: Callable[[TreeNode], bool]) -> int:
    """Unlocked tokens pins hold: each pinned node and every unlocked ancestor of one.

    A parent is only evicted once its last child has gone, so a pin holds its whole
    unlocked path. Walks the unlocked part of the tree above ``leaves`` and asks
    ``is_pinned`` at most once per node there.
    """
    unlocked: list[TreeNode] = []
    seen: set[TreeNode] = set()
    for leaf in leaves:
        node = leaf
        while node is not root and node.lock_ref == 0 and node not in seen:
            seen.add(node)
            unlocked.append(node)
            node = node.parent  # type: ignore[assignment]
    blocked: set[TreeNode] = set()
    held = 0
    for node in unlocked:
        if node in blocked or not is_pinned(node):
            continue
        while node is not root and node.lock_ref == 0 and node not in blocked:
            blocked.add(node)
            held += len(node.key)
            node = node.parent  # type: ignore[assignment]
    return held
