"""The live driver's memory of warms, apart from deciding and sending them (``gateway/driver.py``).

A warm is rebuilt from block hashes, so the ledger keeps each full block's token ids
(bounded, least recently seen dropped first). A sent warm waits for a later call on its
replica to hit the warmed prefix; it is wasted when its session ends or it ages out.
The ledger counts outcomes in ``WarmStats`` and keeps a bounded log for the report.
"""

from __future__ import annotations

import itertools
import time
from array import array
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from pythia_server.policy.types import CallOutcome, PrefetchAction

__all__ = ["WarmLedger", "WarmStats"]

_MAX_BLOCK_TOKENS = 50_000  # block hash -> its token ids (4 bytes each), to rebuild a warm's prompt
_MAX_PENDING_WARMS = 1_000  # warms waiting to be hit, over all replicas
_MAX_ACTION_LOG = 2_000  # warms kept for the report


@dataclass(slots=True)
class WarmStats:
    """Warm (prefill-only) requests: what the cache hints asked for and what came of it."""

    scheduled: int = 0
    sent: int = 0
    hits: int = 0  # a later call on that replica had the warmed prefix cached
    wasted: int = 0  # its session ended (or it aged out) without a hit
    resident: int = 0  # not sent: the prefix index already showed it there
    dropped: int = 0  # not sent: replica gone, no headroom, prompt unknown, or the engine refused

    def as_dict(self) -> dict[str, int]:
        return {"scheduled": self.scheduled, "sent": self.sent, "hits": self.hits, "wasted": self.wasted,
                "resident": self.resident, "dropped": self.dropped}


@dataclass(frozen=True, slots=True)
class _Warm:
    action: PrefetchAction
    tokens: int
    record: dict[str, Any]  # its entry in the cache-action log; the outcome is filled in later


class WarmLedger:
    """Block tokens to rebuild warms, sent warms awaiting a hit, their stats and log."""

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.stats = WarmStats()
        self._block_tokens: OrderedDict[int, array[int]] = OrderedDict()
        self._pending: OrderedDict[int, tuple[str, str | None, _Warm]] = OrderedDict()  # id -> (replica, session, warm)
        self._ids = itertools.count(1)
        #: warms sent, newest last, in the shape reports/enrich.cache_action_summary reads
        self._action_log: deque[dict[str, Any]] = deque(maxlen=_MAX_ACTION_LOG)

    def remember(self, prompt_ids: Sequence[int], block_hashes: Sequence[int]) -> None:
        """Keep each full block's token ids, so a warm can be rebuilt from block hashes."""
        size, table = self.block_size, self._block_tokens
        for i, block in enumerate(block_hashes):
            if block in table:
                table.move_to_end(block)
            else:
                table[block] = array("I", prompt_ids[i * size:(i + 1) * size])
        while len(table) > _MAX_BLOCK_TOKENS:
            table.popitem(last=False)

    def rebuild(self, block_hashes: Sequence[int]) -> tuple[list[int], int]:
        """The warm's prompt ids and how many leading blocks they cover (up to the first unknown)."""
        ids: list[int] = []
        blocks = 0
        for block in block_hashes:
            tokens = self._block_tokens.get(block)
            if tokens is None:
                break  # a block never seen here: warm what can be rebuilt
            ids.extend(tokens)
            blocks += 1
        return ids, blocks

    def new_rid(self) -> str:
        """A request id for the next warm sent to an engine."""
        return f"pythia-warm-{next(self._ids)}"

    def sent(self, action: PrefetchAction, blocks: int, tokens: int) -> None:
        """The engine took the warm of ``action``'s first ``blocks`` blocks: log it, await its hit."""
        self.stats.sent += 1
        record: dict[str, Any] = {
            "at_s": time.time(), "workflow": action.owner.workflow, "action": "warm",
            "agent": action.owner.agent, "replica": action.replica_id, "tokens": tokens,
            "outcome": None, "reason": action.reason}
        self._action_log.append(record)
        self._pending[next(self._ids)] = (action.replica_id, action.owner.session,
                                          _Warm(replace(action, block_hashes=action.block_hashes[:blocks]), tokens, record))
        while len(self._pending) > _MAX_PENDING_WARMS:
            _, (_, _, old) = self._pending.popitem(last=False)
            self._wasted(old)

    def count_hits(self, outcome: CallOutcome) -> None:
        """A warm is a hit when a later call on its replica had the warmed blocks cached."""
        hashes = outcome.call.block_hashes
        for key, (replica_id, _, warm) in list(self._pending.items()):
            if replica_id != outcome.replica_id:
                continue
            blocks = warm.action.block_hashes
            covered = len(blocks) * self.block_size
            if tuple(hashes[:len(blocks)]) == blocks and outcome.cached_tokens >= covered:
                del self._pending[key]
                self.stats.hits += 1
                warm.record["outcome"] = "hit"

    def end_session(self, session: str) -> None:
        """The session is over: its warms still waiting for a hit are wasted."""
        for key, (_, warm_session, warm) in list(self._pending.items()):
            if warm_session == session:
                del self._pending[key]
                self._wasted(warm)

    def action_log(self) -> list[dict[str, Any]]:
        """The latest warms with their outcomes (bounded), for the report's cache section."""
        return [dict(record) for record in self._action_log]

    def _wasted(self, warm: _Warm) -> None:
        self.stats.wasted += 1
        warm.record["outcome"] = "wasted"
