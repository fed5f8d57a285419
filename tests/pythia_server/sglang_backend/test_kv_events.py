"""KV events: SGLang's wire format (the publisher and subscriber over ZMQ are in test_kv_index.py)."""

from __future__ import annotations

import msgpack
import pytest

from pythia_server.engine.events import AllBlocksCleared, BlockRemoved, BlockStored
from pythia_server.sglang_backend.kv_events import KvEventDecodeError, decode_batch, encode_batch
from tests.pythia_server.sglang_backend.kv_helpers import stored

# ---- wire format ---------------------------------------------------------------------------


def test_batch_round_trips_in_sglang_shape() -> None:
    events = [stored(list(range(8))), BlockRemoved(block_hashes=[7, 2**64 - 1]), AllBlocksCleared()]
    payload = encode_batch(events, ts=12.5, dp_rank=0)
    raw = msgpack.unpackb(payload)
    assert raw[0] == 12.5 and raw[2] == 0
    assert raw[1][0]["type"] == "BlockStored" and raw[1][0]["lora_id"] is None and "medium" not in raw[1][0]
    assert raw[1][2] == {"type": "AllBlocksCleared"}
    batch = decode_batch(payload)
    assert batch.ts == 12.5 and list(batch.events) == events


def test_decoder_reads_positional_events_and_skips_host_tiers() -> None:
    payload = msgpack.packb(
        [
            1.0,
            [
                ["BlockStored", [11, 12], None, [1, 2, 3, 4, 5, 6, 7, 8], 4, None],
                {
                    "type": "BlockStored",
                    "block_hashes": [99],
                    "parent_block_hash": 12,
                    "token_ids": [0] * 4,
                    "block_size": 4,
                    "lora_id": None,
                    "medium": "CPU_PINNED",
                },
                {"type": "BlockRemoved", "block_hashes": [11], "medium": "GPU"},
                {"type": "SomethingNew", "x": 1},
            ],
        ]
    )
    batch = decode_batch(payload)
    assert batch.dp_rank is None
    assert batch.events == (
        BlockStored(block_hashes=[11, 12], parent_block_hash=None, token_ids=[1, 2, 3, 4, 5, 6, 7, 8], block_size=4),
        BlockRemoved(block_hashes=[11]),
    )


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1garbage",
        msgpack.packb({"not": "a batch"}),
        msgpack.packb([1.0, [{"type": "BlockStored"}]]),
        msgpack.packb([1.0, [3]]),
    ],
)
def test_garbage_is_a_decode_error(payload: bytes) -> None:
    with pytest.raises(KvEventDecodeError):
        decode_batch(payload)
