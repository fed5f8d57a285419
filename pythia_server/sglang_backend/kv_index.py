"""The gateway's side of SGLang's KV events: an exact per-replica prefix index kept by subscribers.

`KvEventSubscriber` follows one replica's PUB socket (wire format in `kv_events.py`),
detects gaps in the batch sequence, fills them from the replay socket, and when it
cannot (buffer overrun, publisher restarted) drops what it knew about that replica rather
than claim blocks it may no longer hold. `KvEventHub` holds one subscriber per replica
over one shared `PrefixIndex`. The gateway wires the supervisor's events to it: a replica
that died (BACKOFF) -> `reset(id)`; ready again after a restart -> `await resync(id)`;
and asks `index.matched_blocks(replica, call_block_hashes)` when placing a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import zmq
import zmq.asyncio

from pythia_server.aio import cancel_and_wait
from pythia_server.engine.events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KvEvent,
)
from pythia_server.sglang_backend.kv_events import (
    END_SEQ,
    KvEventDecodeError,
    decode_batch,
)
from pythia_server.tokens import block_hashes as pythia_block_hashes

log = logging.getLogger(__name__)

_RECENT_BATCHES = 4096  # applied batches remembered to tell a replay duplicate from a restart


# ---- the index -------------------------------------------------------------------------


@dataclass(slots=True)
class _ReplicaBlocks:
    parents: dict[int, int | None] = field(default_factory=dict)  # our block hash -> our parent hash
    ours: dict[int, int] = field(default_factory=dict)  # the engine's block hash -> ours
    block_size: int | None = None


class PrefixIndex:
    """Which blocks each replica holds; longest cached prefix of a call's chained block hashes.

    Chained hashes make a block's presence imply its prefix was stored with it, and a
    radix cache evicts leaves first, so counting leading hits is exact.

    With `rehash` (the default) blocks are keyed by `pythia_server.tokens.block_hashes` of
    the token ids each BlockStored carries, chained from its parent, so the index speaks
    the gateway's hashes whatever the engine's own are (real SGLang publishes the first 64
    bits of a SHA-256 chain; the simulated engine already uses Pythia's hashes, so both
    agree there). A store whose parent block is unknown (it was stored before we joined
    and the replay buffer no longer has it) cannot be chained and is not claimed.
    """

    def __init__(self, *, rehash: bool = True) -> None:
        self.rehash = rehash
        self.unchained_stores = 0  # stores skipped: parent unknown
        self._replicas: dict[str, _ReplicaBlocks] = {}

    def apply(self, replica_id: str, events: Iterable[KvEvent]) -> None:
        blocks = self._replicas.setdefault(replica_id, _ReplicaBlocks())
        for event in events:
            if isinstance(event, BlockStored):
                self._store(blocks, event)
            elif isinstance(event, BlockRemoved):
                for engine_hash in event.block_hashes:
                    blocks.parents.pop(blocks.ours.pop(engine_hash, engine_hash), None)
            elif isinstance(event, AllBlocksCleared):
                blocks.parents.clear()
                blocks.ours.clear()

    def _store(self, blocks: _ReplicaBlocks, event: BlockStored) -> None:
        parent: int | None = None
        if event.parent_block_hash is not None:
            parent = blocks.ours.get(event.parent_block_hash)
            if parent is None:
                if self.rehash:
                    self.unchained_stores += 1
                    return
                parent = event.parent_block_hash
        ours = pythia_block_hashes(event.token_ids, event.block_size, parent) if self.rehash else event.block_hashes
        for engine_hash, our_hash in zip(event.block_hashes, ours):
            blocks.ours[engine_hash] = our_hash
            blocks.parents[our_hash] = parent
            parent = our_hash
        blocks.block_size = event.block_size

    def clear(self, replica_id: str) -> None:
        if replica_id in self._replicas:
            self._replicas[replica_id].parents.clear()
            self._replicas[replica_id].ours.clear()

    def forget(self, replica_id: str) -> None:
        self._replicas.pop(replica_id, None)

    def matched_blocks(self, replica_id: str, block_hashes: Sequence[int]) -> int:
        """How many leading blocks of `block_hashes` the replica holds."""
        blocks = self._replicas.get(replica_id)
        if blocks is None:
            return 0
        n = 0
        for h in block_hashes:
            if h not in blocks.parents:
                break
            n += 1
        return n

    def matched_tokens(self, replica_id: str, block_hashes: Sequence[int]) -> int:
        blocks = self._replicas.get(replica_id)
        size = blocks.block_size if blocks and blocks.block_size else 0
        return self.matched_blocks(replica_id, block_hashes) * size

    def best(self, block_hashes: Sequence[int]) -> dict[str, int]:
        """Matched blocks per known replica."""
        return {rid: self.matched_blocks(rid, block_hashes) for rid in self._replicas}

    def block_count(self, replica_id: str) -> int:
        blocks = self._replicas.get(replica_id)
        return len(blocks.parents) if blocks else 0

    def holds(self, replica_id: str, block_hash: int) -> bool:
        blocks = self._replicas.get(replica_id)
        return blocks is not None and block_hash in blocks.parents


# ---- subscriber (the gateway's side) ------------------------------------------------------


@dataclass(slots=True)
class SubscriberStats:
    batches: int = 0
    events: int = 0
    gaps: int = 0
    replayed_batches: int = 0
    resets: int = 0  # index dropped: publisher restarted or a gap could not be filled
    decode_errors: int = 0


class KvEventSubscriber:
    """Follows one replica's KV events into a PrefixIndex; fills gaps from the replay socket."""

    def __init__(
        self,
        index: PrefixIndex,
        replica_id: str,
        endpoint: str,
        replay_endpoint: str | None = None,
        *,
        topic: str = "",
        replay_timeout_s: float = 2.0,
        connect_timeout_s: float = 1.0,
    ) -> None:
        self.index, self.replica_id = index, replica_id
        self.endpoint, self.replay_endpoint, self.topic = endpoint, replay_endpoint, topic
        self.replay_timeout_s, self.connect_timeout_s = replay_timeout_s, connect_timeout_s
        self.stats = SubscriberStats()
        self.next_seq = 0  # the batch we expect next
        self._recent: dict[int, int] = {}  # seq -> hash(payload) of recently applied batches
        self._ctx = zmq.asyncio.Context()
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.LINGER, 0)
        self._sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # live batches and resyncs apply one at a time, in order
        self._watcher: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._was_connected = False
        self.stopped = False  # detached while starting (``KvEventHub``)

    async def start(self) -> None:
        """Connect, then catch up from seq 0 through replay (events sent before we joined).

        A watcher follows the connection: each reconnection (a restarted replica binds the
        same port again) is followed by a `resync`, because PUB/SUB drops what is sent
        while the SUB socket is away and a gap only shows when a later batch arrives.
        """
        monitor = self._sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        self._watcher = asyncio.create_task(self._watch_connection(monitor), name=f"kv-conn-{self.replica_id}")
        self._sub.connect(self.endpoint)
        with contextlib.suppress(asyncio.TimeoutError):  # not up yet: the watcher resyncs when it is
            await asyncio.wait_for(self._connected.wait(), self.connect_timeout_s)
        if self.replay_endpoint:
            async with self._lock:
                await self._replay_from(0, until=None)
        self._task = asyncio.create_task(self._run(), name=f"kv-events-{self.replica_id}")

    async def stop(self) -> None:
        for task in (self._task, self._watcher):
            await cancel_and_wait(task)
        self._task = self._watcher = None
        self._ctx.destroy(linger=0)

    async def _watch_connection(self, monitor: zmq.asyncio.Socket) -> None:
        from zmq.utils.monitor import parse_monitor_message

        try:
            while True:
                event = parse_monitor_message(await monitor.recv_multipart())["event"]
                if event == zmq.EVENT_DISCONNECTED:
                    self._connected.clear()
                elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    reconnected = self._was_connected
                    self._was_connected = True
                    self._connected.set()
                    if reconnected and self.replay_endpoint:
                        log.info("replica %s: KV event stream reconnected; resyncing", self.replica_id)
                        await self.resync()
        finally:
            monitor.close(linger=0)

    async def _run(self) -> None:
        while True:
            frames = await self._sub.recv_multipart()
            if len(frames) != 3:
                self.stats.decode_errors += 1
                continue
            await self.handle(int.from_bytes(frames[1], "big"), frames[2])

    async def resync(self) -> None:
        """Forget, then catch up from seq 0 through replay: call when a restarted replica is ready.

        PUB/SUB drops what is sent while the SUB socket reconnects to a new process, and a
        gap is only noticed when a later batch arrives; replaying from 0 closes that window.
        """
        async with self._lock:
            self.reset()
            await self._replay_from(0, until=None)

    async def handle(self, seq: int, payload: bytes) -> None:
        """One live batch: restart and gap detection, then apply in order."""
        async with self._lock:
            await self._handle(seq, payload)

    async def _handle(self, seq: int, payload: bytes) -> None:
        if seq < self.next_seq:
            if self._recent.get(seq) == hash(payload):
                return  # already applied through replay while we were joining
            # a single PUB never goes backwards: the publisher restarted
            log.info(
                "replica %s: KV event seq went back %d -> %d; publisher restarted", self.replica_id, self.next_seq, seq
            )
            self.reset()
        if seq > self.next_seq:
            self.stats.gaps += 1
            filled = self.replay_endpoint is not None and await self._replay_from(self.next_seq, until=seq)
            if not filled:
                log.warning(
                    "replica %s: KV events %d..%d lost; dropping its prefix index",
                    self.replica_id,
                    self.next_seq,
                    seq - 1,
                )
                self.reset()
        self._apply(seq, payload)

    async def _replay_from(self, start_seq: int, until: int | None) -> bool:
        """Fetch buffered batches from `start_seq`; True when everything before `until` came back."""
        if self.replay_endpoint is None:
            return False
        dealer = self._ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        try:
            dealer.connect(self.replay_endpoint)
            await dealer.send_multipart((b"", start_seq.to_bytes(8, "big")))
            while True:
                if not await dealer.poll(int(self.replay_timeout_s * 1000)):
                    return False
                frames = await dealer.recv_multipart()
                if len(frames) != 4:
                    continue
                seq = int.from_bytes(frames[2], "big", signed=True)
                if seq == END_SEQ:
                    return until is None or self.next_seq >= until
                if seq < self.next_seq or (until is not None and seq >= until):
                    continue
                if seq > self.next_seq:  # the buffer no longer holds what we missed
                    if until is not None:
                        return False
                    self.stats.gaps += 1  # joining late: what was trimmed is unknown, not claimed
                self.stats.replayed_batches += 1
                self._apply(seq, frames[3])
        finally:
            dealer.close(linger=0)

    def _apply(self, seq: int, payload: bytes) -> None:
        self.next_seq = seq + 1
        self._recent[seq] = hash(payload)
        if len(self._recent) > _RECENT_BATCHES:
            del self._recent[next(iter(self._recent))]
        try:
            batch = decode_batch(payload)
        except KvEventDecodeError as exc:
            self.stats.decode_errors += 1
            log.warning("replica %s: undecodable KV event batch %d (%s); dropping its index", self.replica_id, seq, exc)
            self.index.clear(self.replica_id)
            return
        self.index.apply(self.replica_id, batch.events)
        self.stats.batches += 1
        self.stats.events += len(batch.events)

    def reset(self) -> None:
        self.stats.resets += 1
        self.index.clear(self.replica_id)
        self.next_seq = 0
        self._recent.clear()


class KvEventHub:
    """One subscriber per replica over one shared index; the gateway attaches and detaches replicas."""

    def __init__(self, index: PrefixIndex | None = None) -> None:
        self.index = index or PrefixIndex()
        self._subscribers: dict[str, KvEventSubscriber] = {}
        self._starting: set[KvEventSubscriber] = set()
        self._closed = False

    async def attach(self, replica_id: str, endpoint: str, replay_endpoint: str | None = None, topic: str = "") -> None:
        """Follow a replica's events. Every subscriber made here is stopped by ``detach`` or
        ``close``, even one still starting: a ZMQ context left open blocks forever when collected."""
        await self.detach(replica_id)
        if self._closed:
            return
        subscriber = KvEventSubscriber(self.index, replica_id, endpoint, replay_endpoint, topic=topic)
        self._starting.add(subscriber)
        try:
            await subscriber.start()
        except BaseException:  # cancelled mid-start (shutdown), or its context closed under it
            await subscriber.stop()
            raise
        finally:
            self._starting.discard(subscriber)
        if self._closed or subscriber.stopped or replica_id in self._subscribers:  # closed, detached, replaced
            await subscriber.stop()
            return
        self._subscribers[replica_id] = subscriber

    async def detach(self, replica_id: str) -> None:
        subscriber = self._subscribers.pop(replica_id, None)
        if subscriber is not None:
            await subscriber.stop()
        for starting in [s for s in self._starting if s.replica_id == replica_id]:
            starting.stopped = True  # its attach sees this and does not keep it
            await starting.stop()
        self.index.forget(replica_id)

    async def resync(self, replica_id: str) -> None:
        """The replica is ready again after a restart: catch up with what its new process sent."""
        subscriber = self._subscribers.get(replica_id)
        if subscriber is not None:
            await subscriber.resync()

    def reset(self, replica_id: str) -> None:
        """The replica died (the supervisor said so): it holds nothing until new events say otherwise."""
        subscriber = self._subscribers.get(replica_id)
        if subscriber is not None:
            subscriber.reset()
        else:
            self.index.clear(replica_id)

    async def close(self) -> None:
        self._closed = True
        for subscriber in list(self._starting):
            await subscriber.stop()
        for replica_id in list(self._subscribers):
            await self.detach(replica_id)

    def stats(self) -> dict[str, SubscriberStats]:
        return {rid: s.stats for rid, s in self._subscribers.items()}


def endpoints_from_server_info(info: dict[str, object], worker_host: str) -> list[tuple[str, str | None, str]]:
    """(pub, replay, topic) per DP rank from SGLang's `/server_info` `kv_events` descriptor.

    Wildcard hosts are replaced by the worker's host, as SGLang's descriptor asks.
    """
    descriptor = info.get("kv_events")
    if not isinstance(descriptor, dict) or not descriptor.get("endpoint_port_base"):
        return []
    host = str(descriptor.get("endpoint_host") or worker_host)
    if host in ("*", "0.0.0.0", "::", ""):
        host = worker_host
    base = int(descriptor["endpoint_port_base"])
    replay_base = descriptor.get("replay_endpoint_port_base")
    topic = str(descriptor.get("topic") or "")
    out = []
    for rank in range(int(descriptor.get("dp_size") or 1)):
        replay = f"tcp://{host}:{int(replay_base) + rank}" if replay_base else None
        out.append((f"tcp://{host}:{base + rank}", replay, topic))
    return out
