"""SGLang's KV-event stream over ZMQ: the wire format, a publisher, a subscriber, a prefix index.

Wire format (SGLang 0.5 `srt/disaggregation/kv_events.py`, the same as vLLM's, which
Dynamo's KV router reads):

* PUB socket, multipart `[topic, seq, payload]`: `seq` is an 8-byte big-endian batch
  counter from 0; `payload` is msgpack of `EventBatch` as an array `[ts, events,
  attn_dp_rank]`.
* Each event is a msgpack map tagged by class name: `{"type": "BlockStored",
  "block_hashes": [...], "parent_block_hash": h|nil, "token_ids": [...], "block_size": n,
  "lora_id": nil}`, `{"type": "BlockRemoved", "block_hashes": [...]}`,
  `{"type": "AllBlocksCleared"}`; optional fields left at their default are omitted
  (`medium`, `session_id`, ...). Older encoders sent positional arrays `["BlockStored",
  hashes, parent, token_ids, block_size, lora_id]`; the decoder reads both.
* Replay: a ROUTER socket; a DEALER sends `[b"", start_seq]` and gets `[b"", topic, seq,
  payload]` for every buffered batch from `start_seq`, then `[b"", b"", -1, b""]`.

The gateway's side (subscriber, prefix index) is in `kv_index.py`. Only device-tier (GPU)
blocks are decoded: host-tier copies (`medium` CPU_PINNED, DISK...) are skipped.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import msgpack
import zmq

from pythia_server.engine.events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KvEvent,
)

log = logging.getLogger(__name__)

END_SEQ = -1
_DEVICE_MEDIA = (None, "GPU")


# ---- wire format -----------------------------------------------------------------------


def encode_event(event: KvEvent) -> dict[str, object]:
    if isinstance(event, BlockStored):
        return {
            "type": "BlockStored",
            "block_hashes": list(event.block_hashes),
            "parent_block_hash": event.parent_block_hash,
            "token_ids": list(event.token_ids),
            "block_size": event.block_size,
            "lora_id": None,
        }
    if isinstance(event, BlockRemoved):
        return {"type": "BlockRemoved", "block_hashes": list(event.block_hashes)}
    if isinstance(event, AllBlocksCleared):
        return {"type": "AllBlocksCleared"}
    raise TypeError(f"not a KV event: {event!r}")


def encode_batch(events: Sequence[KvEvent], ts: float, dp_rank: int | None = 0) -> bytes:
    return msgpack.packb([ts, [encode_event(e) for e in events], dp_rank], use_bin_type=True)


@dataclass(frozen=True, slots=True)
class EventBatch:
    ts: float
    events: tuple[KvEvent, ...]
    dp_rank: int | None


class KvEventDecodeError(ValueError):
    """A payload that is not an SGLang KV event batch."""


def decode_batch(payload: bytes) -> EventBatch:
    """Decode one payload; unknown event types and non-device tiers are skipped."""
    try:
        raw = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise KvEventDecodeError(f"not msgpack: {exc}") from exc
    if not isinstance(raw, list) or len(raw) < 2 or not isinstance(raw[1], list):
        raise KvEventDecodeError(f"not an event batch: {str(raw)[:80]}")
    events = [e for e in (_decode_event(item) for item in raw[1]) if e is not None]
    dp_rank = raw[2] if len(raw) > 2 else None
    return EventBatch(float(raw[0]), tuple(events), dp_rank)


def _decode_event(item: object) -> KvEvent | None:
    if isinstance(item, list) and item and isinstance(item[0], str):  # positional (older encoders)
        names = {
            "BlockStored": ("block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium"),
            "BlockRemoved": ("block_hashes", "medium"),
            "AllBlocksCleared": (),
        }.get(item[0], ())
        item = {"type": item[0], **dict(zip(names, item[1:]))}
    if not isinstance(item, dict):
        raise KvEventDecodeError(f"not an event: {str(item)[:80]}")
    kind = item.get("type")
    if item.get("medium") not in _DEVICE_MEDIA:
        return None
    try:
        if kind == "BlockStored":
            return BlockStored(
                block_hashes=[int(h) for h in item["block_hashes"]],
                parent_block_hash=None if item.get("parent_block_hash") is None else int(item["parent_block_hash"]),
                token_ids=[int(t) for t in item.get("token_ids", [])],
                block_size=int(item["block_size"]),
            )
        if kind == "BlockRemoved":
            return BlockRemoved(block_hashes=[int(h) for h in item["block_hashes"]])
    except (KeyError, TypeError, ValueError) as exc:
        raise KvEventDecodeError(f"bad {kind} event: {exc}") from exc
    if kind == "AllBlocksCleared":
        return AllBlocksCleared()
    return None  # an event type this version does not know


# ---- publisher (the simulated engine's side) ---------------------------------------------


class KvEventPublisher:
    """Publishes KV events as SGLang does: a PUB socket and a ROUTER replay buffer, one thread.

    Call it with each event (it is a `KvEventListener`); events queued while the thread
    was busy go out as one batch, as SGLang batches one scheduler step.
    """

    def __init__(
        self,
        endpoint: str,
        replay_endpoint: str | None = None,
        *,
        topic: str = "",
        buffer_batches: int = 10_000,
        dp_rank: int = 0,
    ) -> None:
        self._ctx = zmq.Context()
        self._pub = self._ctx.socket(zmq.PUB)
        self._pub.setsockopt(zmq.LINGER, 0)
        self._pub.bind(endpoint)
        self.endpoint = self._pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self._replay: zmq.Socket | None = None
        self.replay_endpoint: str | None = None
        if replay_endpoint:
            self._replay = self._ctx.socket(zmq.ROUTER)
            self._replay.setsockopt(zmq.LINGER, 0)
            self._replay.bind(replay_endpoint)
            self.replay_endpoint = self._replay.getsockopt_string(zmq.LAST_ENDPOINT)
        self._topic = topic.encode()
        self._dp_rank = dp_rank
        self._queue: queue.SimpleQueue[KvEvent | None] = queue.SimpleQueue()
        self._buffer: list[tuple[int, bytes]] = []
        self._buffer_batches = buffer_batches
        self._next_seq = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="kv-event-publisher", daemon=True)
        self._thread.start()

    def __call__(self, event: KvEvent) -> None:
        if not self._closed:
            self._queue.put(event)

    publish = __call__

    def close(self) -> None:
        """Flush what is queued, then close the sockets."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=5)
        self._ctx.destroy(linger=0)

    @property
    def published_batches(self) -> int:
        return self._next_seq

    def _run(self) -> None:
        poller = zmq.Poller()
        if self._replay is not None:
            poller.register(self._replay, zmq.POLLIN)
        while True:
            if self._replay is not None and poller.poll(0):
                self._serve_replay()
            try:
                first = self._queue.get(timeout=0.05)
            except queue.Empty:
                continue
            events, stop = ([] if first is None else [first]), first is None
            while not stop:
                try:
                    event = self._queue.get_nowait()
                except queue.Empty:
                    break
                stop = event is None
                if event is not None:
                    events.append(event)
            if events:
                self._send(events)
            if stop:
                return

    def _send(self, events: list[KvEvent]) -> None:
        seq, payload = self._next_seq, encode_batch(events, time.time(), self._dp_rank)
        self._next_seq += 1
        self._pub.send_multipart((self._topic, seq.to_bytes(8, "big"), payload))
        self._buffer.append((seq, payload))
        if len(self._buffer) > self._buffer_batches:
            del self._buffer[: len(self._buffer) - self._buffer_batches]

    def _serve_replay(self) -> None:
        assert self._replay is not None
        frames = self._replay.recv_multipart()
        if len(frames) != 3:
            log.warning("ignoring malformed replay request (%d frames)", len(frames))
            return
        client, _, start = frames
        start_seq = int.from_bytes(start, "big")
        for seq, payload in self._buffer:
            if seq >= start_seq:
                self._replay.send_multipart((client, b"", self._topic, seq.to_bytes(8, "big"), payload))
        self._replay.send_multipart((client, b"", b"", END_SEQ.to_bytes(8, "big", signed=True), b""))
