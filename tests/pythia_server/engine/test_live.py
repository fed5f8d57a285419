"""The wall-clock driver: streams tokens, honours speedup, aborts."""

from __future__ import annotations

import asyncio

from pythia_server.engine.core import Engine
from pythia_server.engine.live import LiveEngine
from pythia_server.engine.types import EngineConfig, GenerateRequest
from pythia_server.tokens import tokenize


async def test_streams_every_token_then_the_finish() -> None:
    live = LiveEngine(Engine(EngineConfig()), speedup=1000.0)
    await live.start()
    try:
        stream = live.submit(GenerateRequest("a", tokenize("hello world " * 50), 12, ignore_eos=True))
        events = [event async for event in stream]
    finally:
        await live.stop()
    assert [e.delta is not None for e in events] == [True] * 12
    assert events[-1].finished is not None and events[-1].finished.completion_tokens == 12
    text = "".join(e.delta.text for e in events if e.delta)
    assert text == events[-1].finished.text
    assert live.load().num_running_reqs == 0


async def test_engine_time_follows_step_durations_at_the_speedup() -> None:
    live = LiveEngine(Engine(EngineConfig()), speedup=10.0)
    await live.start()
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        finished = await live.submit(GenerateRequest("a", tokenize("x " * 4000), 30, ignore_eos=True)).result()
        wall = loop.time() - start
    finally:
        await live.stop()
    simulated = finished.finish_s - finished.arrival_s
    assert simulated > 0.2  # a 4000-token prefill plus 29 decode steps on an H100
    assert wall >= simulated / 10.0 * 0.9  # never runs ahead of the wall clock


async def test_abort_ends_the_stream_and_frees_the_engine() -> None:
    live = LiveEngine(Engine(EngineConfig()), speedup=50.0)
    await live.start()
    try:
        stream = live.submit(GenerateRequest("long", tokenize("y " * 100), 100_000, ignore_eos=True))
        seen = 0
        async for event in stream:
            seen += 1
            if seen == 3:
                assert live.abort("long")
        assert stream.finished is not None and stream.finished.finish_reason["type"] == "abort"
        assert live.load().num_running_reqs == 0 and live.load().num_used_tokens == 0
        assert not live.abort("long")
    finally:
        await live.stop()
