from __future__ import annotations

from pythia_server.policy.baselines import ApproxTree


def test_prefix_match_returns_depth_and_owner() -> None:
    tree = ApproxTree(block_size=16)
    tree.insert([1, 2, 3], "a", now_s=1.0)
    tree.insert([1, 2, 9], "b", now_s=2.0)
    assert tree.prefix_match([1, 2, 3, 4], now_s=3.0) == (48, "a")
    assert tree.prefix_match([1, 2, 9], now_s=3.0) == (48, "b")
    # the shared part [1, 2] is owned by both; the most recent toucher wins
    assert tree.prefix_match([1, 2, 7], now_s=4.0)[0] == 32
    assert tree.prefix_match([5], now_s=4.0)[0] == 0


def test_sizes_count_each_block_once_per_tenant_and_smallest_tenant() -> None:
    tree = ApproxTree(block_size=10)
    for tenant in ("a", "b", "c"):
        tree.add_tenant(tenant)
    tree.insert([1, 2], "a", 0.0)
    tree.insert([1, 2, 3], "a", 1.0)
    tree.insert([7], "b", 1.0)
    assert (tree.tenant_tokens("a"), tree.tenant_tokens("b"), tree.tenant_tokens("c")) == (30, 10, 0)
    assert tree.smallest_tenant() == "c"
    assert tree.smallest_tenant(["a", "b"]) == "b"


def test_eviction_drops_least_recently_used_leaves_until_under_budget() -> None:
    tree = ApproxTree(block_size=1)
    tree.insert([1, 2], "a", now_s=1.0)  # older branch
    tree.insert([1, 3], "a", now_s=5.0)  # newer branch
    tree.insert([8], "b", now_s=0.0)
    dropped = tree.evict_tenant_by_size(max_tokens=2)
    assert dropped == 1 and tree.tenant_tokens("a") == 2
    assert tree.prefix_match([1, 2], now_s=6.0)[0] == 1  # leaf 2 went first
    assert tree.prefix_match([1, 3], now_s=6.0)[0] == 2
    assert tree.tenant_tokens("b") == 1  # under budget: untouched


def test_eviction_walks_up_to_parents_that_become_leaves() -> None:
    tree = ApproxTree(block_size=1)
    tree.insert([1, 2, 3], "a", now_s=1.0)
    tree.evict_tenant_by_size(max_tokens=0)
    assert tree.tenant_tokens("a") == 0
    assert tree.prefix_match([1, 2, 3], now_s=2.0)[0] == 0


def test_remove_tenant_forgets_its_blocks() -> None:
    tree = ApproxTree(block_size=4)
    tree.insert([1, 2], "a", 0.0)
    tree.insert([1], "b", 0.0)
    tree.remove_tenant("a")
    assert tree.prefix_match([1, 2], now_s=1.0) == (4, "b")
