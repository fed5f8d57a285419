"""The wall-clock driver: streams tokens, honours speedup, aborts."""

from __future__ import annotations

import asyncio
import time

import pytest

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


async def test_a_late_event_loop_delays_delivery_but_not_simulated_time() -> None:
    """Back to back, each step starts at the previous one's end in engine time, so lateness of
    the wall clock (here: a clock that runs 0.3 ms fast at every read) is not added to it."""
    ids = tokenize("x " * 1500)
    offline = Engine(EngineConfig())
    offline.submit(GenerateRequest("a", ids, 40, ignore_eos=True), 0.0)
    now_s, finish_s = 0.0, None
    while (result := offline.step(now_s)) is not None:
        now_s = result.end_s
        finish_s = result.finished[0].finish_s if result.finished else finish_s
    assert finish_s is not None

    lateness = [0.0]

    def late_clock() -> float:
        lateness[0] += 0.0003
        return time.monotonic() + lateness[0]

    live = LiveEngine(Engine(EngineConfig()), speedup=50.0, clock=late_clock)
    await live.start()
    try:
        finished = await live.submit(GenerateRequest("a", ids, 40, ignore_eos=True)).result()
    finally:
        await live.stop()
    assert finished.completion_tokens == 40
    assert finished.finish_s - finished.arrival_s == pytest.approx(finish_s, rel=1e-9)
    assert live.resyncs == 0 and live.max_lag_seen_s > 0.0  # it did trail the clock, and caught nothing up wrongly


async def test_an_engine_far_behind_the_clock_resyncs_to_it() -> None:
    jump = [0.0]

    def jumping_clock() -> float:
        jump[0] += 0.5  # half a wall second per read: hopelessly behind
        return time.monotonic() + jump[0]

    live = LiveEngine(Engine(EngineConfig()), speedup=10.0, clock=jumping_clock, max_lag_s=1.0)
    await live.start()
    try:
        finished = await live.submit(GenerateRequest("a", tokenize("y " * 200), 20, ignore_eos=True)).result()
    finally:
        await live.stop()
    assert finished.completion_tokens == 20
    assert live.resyncs > 0


async def test_set_priority_reaches_a_queued_request() -> None:
    engine = Engine(EngineConfig(max_running_requests=1, enable_priority_scheduling=True))
    live = LiveEngine(engine, speedup=1000.0)
    await live.start()
    try:
        first = live.submit(GenerateRequest("first", tokenize("a " * 100), 50, ignore_eos=True, priority=0))
        low = live.submit(GenerateRequest("low", tokenize("b " * 100), 5, ignore_eos=True, priority=0))
        high = live.submit(GenerateRequest("high", tokenize("c " * 100), 5, ignore_eos=True, priority=0))
        assert live.set_priority("high", 5)
        assert not live.set_priority("nobody", 5)
        results = [await s.result() for s in (first, low, high)]
    finally:
        await live.stop()
    by = {r.rid: r for r in results}
    assert by["high"].finish_s < by["low"].finish_s
