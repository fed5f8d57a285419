"""One node of the radix prefix cache and what it remembers, apart from the tree's operations.

``engine/radix_cache.py`` walks, splits, locks and evicts these; ``engine/evict_policy.py``
orders them. What a node records (access tick, hit count, priority, owners, session refs)
is exactly what the eviction orders read.
"""

from __future__ import annotations

from collections.abc import Hashable

__all__ = ["MAX_OWNERS_PER_NODE", "TreeNode", "add_owner"]

MAX_OWNERS_PER_NODE = 8


class TreeNode:
    __slots__ = (
        "children", "depth_tokens", "hashes", "hit_count", "key", "last_access", "lock_ref", "owners", "parent",
        "priority", "session_refs",
    )

    def __init__(self, key: list[int], parent: TreeNode | None) -> None:
        self.key = key
        self.parent = parent
        # tokens from the root to this node's end: fixed for the node's life (a split
        # trims a node's key from the front, so its end stays where it was)
        self.depth_tokens = len(key) + (parent.depth_tokens if parent is not None else 0)
        self.children: dict[object, TreeNode] = {}
        self.lock_ref = 0
        self.last_access = 0
        self.hit_count = 0
        self.priority = 0
        self.hashes: list[int] = []  # one chained block hash per page; only kept for events
        self.owners: tuple[Hashable, ...] = ()  # who inserted or matched it, most recent last
        self.session_refs = 0  # open sessions whose KV ends here (session radix cache)


def add_owner(node: TreeNode, owner: Hashable) -> None:
    """Record ``owner`` as the node's most recent, keeping at most ``MAX_OWNERS_PER_NODE``."""
    owners = node.owners
    if owners and owners[-1] == owner:
        return
    if owner in owners:
        owners = tuple(o for o in owners if o != owner)
    node.owners = (*owners, owner)[-MAX_OWNERS_PER_NODE:]
