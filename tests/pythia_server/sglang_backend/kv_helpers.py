"""Shared by the KV-event tests: events with real chained hashes, loopback endpoints, waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from pythia_server.engine.events import BlockStored
from pythia_server.sglang_backend.kv_events import KvEventPublisher
from pythia_server.sglang_backend.launcher import free_ports
from pythia_server.tokens import block_hashes

BLOCK = 4


def stored(tokens: list[int], parent: int | None = None) -> BlockStored:
    hashes = block_hashes(tokens, BLOCK, parent)
    return BlockStored(
        block_hashes=hashes, parent_block_hash=parent, token_ids=tokens[: len(hashes) * BLOCK], block_size=BLOCK
    )


def endpoints() -> tuple[str, str]:
    pub, replay = free_ports(2)
    return f"tcp://127.0.0.1:{pub}", f"tcp://127.0.0.1:{replay}"


async def publish_alone(publisher: KvEventPublisher, event: object) -> None:
    """Publish one event as its own batch (events queued together would share one)."""
    n = publisher.published_batches
    publisher(event)  # type: ignore[arg-type]
    await wait_for(lambda: publisher.published_batches == n + 1)


async def wait_for(predicate: Callable[[], bool], bound_s: float = 10.0) -> None:
    for _ in range(int(bound_s / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")
