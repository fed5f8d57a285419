from __future__ import annotations

from pythia_server.policy.baselines import NOT_EXPECTED, combine_hints, is_pinned, node_sort_key
from pythia_server.policy.types import CacheHintPolicy, CacheOwner, CallInfo, CallOutcome, PrefetchAction, RetentionHint


class TableHints:
    """A CacheHintPolicy answering from a fixed table."""

    name = "table"

    def __init__(self, table: dict[CacheOwner, RetentionHint]) -> None:
        self.table = table

    def retention(self, owner: CacheOwner, now_s: float) -> RetentionHint | None:
        return self.table.get(owner)

    def on_start(self, call: CallInfo, replica_id: str, now_s: float) -> None: ...

    def on_finish(self, outcome: CallOutcome, now_s: float) -> tuple[PrefetchAction, ...]:
        return ()

    def on_session_end(self, session: str, now_s: float) -> None: ...


A, B, C = CacheOwner("w", "s", "a"), CacheOwner("w", "s", "b"), CacheOwner("w", "s", "c")


def test_the_table_double_is_a_cache_hint_policy() -> None:
    assert isinstance(TableHints({}), CacheHintPolicy)


def test_combine_takes_latest_pin_and_nearest_step() -> None:
    hint = combine_hints([RetentionHint(5.0, 3), None, RetentionHint(9.0, None), RetentionHint(None, 1)])
    assert (hint.pinned_until_s, hint.steps_to_execution) == (9.0, 1)
    assert combine_hints([None, RetentionHint()]) is None


def test_sort_key_orders_far_then_near_then_pinned_with_lru_ties() -> None:
    hints = TableHints({A: RetentionHint(None, 1), B: RetentionHint(None, 4), C: RetentionHint(10.0, None)})
    keys = {
        "near_old": node_sort_key(hints, [A], 1.0, now_s=5.0),
        "near_new": node_sort_key(hints, [A], 2.0, now_s=5.0),
        "far": node_sort_key(hints, [B], 9.0, now_s=5.0),
        "unknown": node_sort_key(hints, [CacheOwner()], 9.0, now_s=5.0),
        "pinned": node_sort_key(hints, [C], 0.0, now_s=5.0),
        "shared": node_sort_key(hints, [A, B], 0.5, now_s=5.0),  # min steps: valued like A
    }
    order = sorted(keys, key=keys.__getitem__)
    assert order == ["unknown", "far", "shared", "near_old", "near_new", "pinned"]
    assert keys["unknown"][1] == -NOT_EXPECTED
    assert is_pinned(hints, [C], 5.0) and not is_pinned(hints, [C], 10.0)
    assert node_sort_key(hints, [C], 0.0, now_s=10.0) < keys["far"]  # an expired pin is plain LRU
