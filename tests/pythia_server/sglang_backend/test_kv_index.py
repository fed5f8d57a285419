"""The prefix index, and publisher -> subscriber over real ZMQ on loopback: replay, gaps, restarts."""

from __future__ import annotations

from pythia_server.engine.events import AllBlocksCleared, BlockRemoved, BlockStored
from pythia_server.sglang_backend.kv_events import KvEventPublisher, encode_batch
from pythia_server.sglang_backend.kv_index import KvEventHub, KvEventSubscriber, PrefixIndex, endpoints_from_server_info
from pythia_server.tokens import block_hashes
from tests.pythia_server.sglang_backend.kv_helpers import BLOCK, endpoints, publish_alone, stored, wait_for

# ---- index ---------------------------------------------------------------------------------


def test_index_matches_longest_cached_prefix() -> None:
    index = PrefixIndex()
    shared, tail_a, tail_b = list(range(8)), [100, 101, 102, 103], [200, 201, 202, 203]
    first = stored(shared + tail_a)
    index.apply("r0", [first])
    call_b = block_hashes(shared + tail_b + [5, 5, 5, 5], BLOCK)
    assert index.matched_blocks("r0", call_b) == 2  # the shared two blocks, not tail_b
    assert index.matched_tokens("r0", call_b) == 8
    assert index.matched_blocks("r0", first.block_hashes) == 3
    assert index.best(call_b) == {"r0": 2}
    assert index.matched_blocks("unknown", call_b) == 0

    index.apply("r0", [BlockRemoved(block_hashes=[first.block_hashes[-1]])])  # leaf evicted
    assert index.matched_blocks("r0", first.block_hashes) == 2
    continuation = stored(tail_b, parent=first.block_hashes[1])  # a child stored under the shared prefix
    index.apply("r0", [continuation])
    assert index.matched_blocks("r0", block_hashes(shared + tail_b, BLOCK)) == 3
    index.apply("r0", [AllBlocksCleared()])
    assert index.block_count("r0") == 0 and index.matched_blocks("r0", call_b) == 0


def test_endpoints_from_server_info_substitutes_wildcards() -> None:
    info = {
        "kv_events": {
            "publisher": "zmq",
            "endpoint_host": "*",
            "endpoint_port_base": 5557,
            "replay_endpoint_port_base": 5600,
            "topic": "kv",
            "block_size": 64,
            "dp_size": 2,
        }
    }
    assert endpoints_from_server_info(info, "10.1.2.3") == [
        ("tcp://10.1.2.3:5557", "tcp://10.1.2.3:5600", "kv"),
        ("tcp://10.1.2.3:5558", "tcp://10.1.2.3:5601", "kv"),
    ]
    assert endpoints_from_server_info({"kv_events": None}, "h") == []


# ---- over ZMQ ------------------------------------------------------------------------------


async def test_late_subscriber_catches_up_by_replay_then_follows_live() -> None:
    pub_ep, replay_ep = endpoints()
    publisher = KvEventPublisher(pub_ep, replay_ep)
    hub = KvEventHub()
    try:
        early = stored(list(range(12)))
        await publish_alone(publisher, early)  # sent before anyone listened
        await hub.attach("r0", pub_ep, replay_ep)
        assert hub.index.matched_blocks("r0", early.block_hashes) == 3
        late = stored([9, 9, 9, 9, 8, 8, 8, 8], parent=early.block_hashes[-1])
        publisher(late)
        publisher(BlockRemoved(block_hashes=[early.block_hashes[0]]))
        await wait_for(lambda: not hub.index.holds("r0", early.block_hashes[0]))
        assert hub.index.holds("r0", late.block_hashes[-1])
        stats = hub.stats()["r0"]
        assert stats.replayed_batches == 1 and stats.resets == 0 and stats.decode_errors == 0
    finally:
        await hub.close()
        publisher.close()


async def test_gap_is_filled_from_the_replay_socket() -> None:
    pub_ep, replay_ep = endpoints()
    publisher = KvEventPublisher(pub_ep, replay_ep)
    index = PrefixIndex()
    subscriber = KvEventSubscriber(index, "r0", pub_ep, replay_ep)
    try:
        batches = [stored([i] * 8) for i in range(5)]
        for event in batches:
            await publish_alone(publisher, event)
        # Only the last batch "arrived"; 0..3 were lost on the way.
        await subscriber.handle(4, encode_batch([batches[4]], ts=0.0))
        assert subscriber.stats.gaps == 1 and subscriber.stats.replayed_batches == 4
        assert all(index.matched_blocks("r0", b.block_hashes) == 2 for b in batches)
        assert subscriber.next_seq == 5
    finally:
        await subscriber.stop()
        publisher.close()


async def test_unfillable_gap_drops_the_replica_index() -> None:
    pub_ep, replay_ep = endpoints()
    publisher = KvEventPublisher(pub_ep, replay_ep, buffer_batches=2)
    index = PrefixIndex()
    subscriber = KvEventSubscriber(index, "r0", pub_ep, replay_ep)
    try:
        stale = stored([42] * 8)
        await subscriber.handle(0, encode_batch([stale], ts=0.0))
        for i in range(1, 6):
            await publish_alone(publisher, stored([i] * 8))
        await subscriber.handle(6, encode_batch([stored([6] * 8)], ts=0.0))  # 1..5 missed; buffer has 3, 4 only
        assert subscriber.stats.resets == 1
        assert index.matched_blocks("r0", stale.block_hashes) == 0  # not claimed any more
        assert index.matched_blocks("r0", stored([6] * 8).block_hashes) == 2
    finally:
        await subscriber.stop()
        publisher.close()


async def test_publisher_restart_resets_the_index() -> None:
    pub_ep, replay_ep = endpoints()
    index = PrefixIndex()
    subscriber = KvEventSubscriber(index, "r0", pub_ep, replay_ep)
    old = stored([1] * 8)
    await subscriber.handle(0, encode_batch([old], ts=0.0))
    await subscriber.handle(1, encode_batch([stored([2] * 8)], ts=0.0))
    await subscriber.handle(1, encode_batch([stored([2] * 8)], ts=0.0))  # a replay duplicate: ignored
    assert subscriber.stats.resets == 0
    fresh = stored([3] * 8)
    await subscriber.handle(0, encode_batch([fresh], ts=1.0))  # seq back to 0 with new content: restarted
    assert subscriber.stats.resets == 1
    assert index.matched_blocks("r0", old.block_hashes) == 0 and index.matched_blocks("r0", fresh.block_hashes) == 2
    await subscriber.stop()


async def test_detach_forgets_the_replica() -> None:
    pub_ep, replay_ep = endpoints()
    publisher = KvEventPublisher(pub_ep, replay_ep)
    hub = KvEventHub()
    try:
        await hub.attach("r0", pub_ep, replay_ep)
        event = stored([5] * 8)
        publisher(event)
        await wait_for(lambda: hub.index.matched_blocks("r0", event.block_hashes) == 2)
        await hub.detach("r0")
        assert hub.index.matched_blocks("r0", event.block_hashes) == 0 and hub.stats() == {}
    finally:
        await hub.close()
        publisher.close()


async def test_a_subscriber_still_starting_is_stopped_by_detach_and_close() -> None:
    """Nobody publishes yet, so each start waits out its connect timeout: detach and close
    meanwhile must still destroy its ZMQ context (one left open blocks forever when collected)."""
    import asyncio

    hub = KvEventHub()
    made: list[KvEventSubscriber] = []
    original = KvEventSubscriber.__init__

    def spy(self: KvEventSubscriber, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        made.append(self)

    KvEventSubscriber.__init__ = spy  # type: ignore[method-assign]
    try:
        first = asyncio.create_task(hub.attach("r0", endpoints()[0]))
        second = asyncio.create_task(hub.attach("r1", endpoints()[0]))
        await wait_for(lambda: len(made) == 2)
        await hub.detach("r0")
        await hub.close()
        await asyncio.gather(first, second, return_exceptions=True)
    finally:
        KvEventSubscriber.__init__ = original  # type: ignore[method-assign]
    assert hub.stats() == {}
    assert all(subscriber._ctx.closed for subscriber in made)


def test_index_rehashes_engine_hashes_into_the_gateways() -> None:
    """Real SGLang publishes its own (SHA-256) hashes; the index keys blocks by Pythia's."""
    index = PrefixIndex()
    tokens, more = list(range(8)), [50, 51, 52, 53]
    engine = [-(2**62), 2**62 + 5]  # any 64-bit values, signed like SGLang's
    index.apply("r0", [BlockStored(block_hashes=engine, parent_block_hash=None, token_ids=tokens, block_size=BLOCK)])
    ours = block_hashes(tokens + more, BLOCK)
    assert index.matched_blocks("r0", ours) == 2 and not index.holds("r0", engine[0])
    index.apply("r0", [BlockStored(block_hashes=[7], parent_block_hash=engine[1], token_ids=more, block_size=BLOCK)])
    assert index.matched_blocks("r0", ours) == 3
    index.apply("r0", [BlockRemoved(block_hashes=[7])])  # removals name the engine's hash
    assert index.matched_blocks("r0", ours) == 2
    index.apply("r0", [BlockStored(block_hashes=[9], parent_block_hash=12345, token_ids=more, block_size=BLOCK)])
    assert index.unchained_stores == 1 and index.block_count("r0") == 2  # unknown parent: not claimed


def test_index_without_rehash_keys_by_engine_hashes() -> None:
    index = PrefixIndex(rehash=False)
    index.apply("r0", [BlockStored(block_hashes=[1, 2], parent_block_hash=None, token_ids=[0] * 8, block_size=BLOCK)])
    index.apply("r0", [BlockStored(block_hashes=[3], parent_block_hash=99, token_ids=[0] * 4, block_size=BLOCK)])
    assert index.matched_blocks("r0", [1, 2]) == 2 and index.holds("r0", 3)  # parent 99 unknown: kept as is
    index.apply("r0", [BlockRemoved(block_hashes=[2])])
    assert index.matched_blocks("r0", [1, 2]) == 1


async def test_reconnection_to_a_restarted_publisher_resyncs() -> None:
    """A new process on the same port: its first batch may go out before the SUB reconnects."""
    pub_ep, replay_ep = endpoints()
    old = KvEventPublisher(pub_ep, replay_ep)
    hub = KvEventHub()
    new: KvEventPublisher | None = None
    try:
        await hub.attach("r0", pub_ep, replay_ep)
        before = stored([1] * 8)
        old(before)
        await wait_for(lambda: hub.index.matched_blocks("r0", before.block_hashes) == 2)
        old.close()
        new = KvEventPublisher(pub_ep, replay_ep)
        after = stored([2] * 8)
        new(after)  # the only batch: no later one would reveal a gap
        await wait_for(lambda: hub.index.matched_blocks("r0", after.block_hashes) == 2)
        assert hub.index.matched_blocks("r0", before.block_hashes) == 0
    finally:
        await hub.close()
        if new is not None:
            new.close()
