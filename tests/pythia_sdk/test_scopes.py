"""Context managers and decorators for hand-written agents: tags and spans."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import pythia_sdk as pythia
from pythia_sdk import _semconv as sc
from pythia_sdk.protocol import AgentTags


def test_workflow_session_agent_nesting(spans: InMemorySpanExporter) -> None:
    assert pythia.current_tags() is None
    with pythia.workflow("coding", session="s1"):
        assert pythia.current_tags() == AgentTags("coding", "s1")
        with pythia.agent("planner"):
            assert pythia.current_tags() == AgentTags("coding", "s1", "planner")
            with pythia.agent("helper"):
                assert pythia.current_tags() == AgentTags("coding", "s1", "helper", "planner")
            with pythia.agent("other", parent="boss"):
                assert pythia.current_tags().parent == "boss"
        with pythia.tool("search"):
            assert pythia.current_tags() == AgentTags("coding", "s1")
    assert pythia.current_tags() is None
    names = [s.name for s in spans.get_finished_spans()]
    assert names == ["invoke_agent helper", "invoke_agent other", "invoke_agent planner",
                     "execute_tool search", "invoke_workflow coding"]


def test_session_ids_and_nested_workflows(spans: InMemorySpanExporter) -> None:
    with pythia.session(workflow="w") as span:
        first = pythia.current_tags()
        assert first.session and len(first.session) == 32
        assert span.is_recording()
        with pythia.workflow("sub"):  # joins the running session as an agent
            assert pythia.current_tags() == AgentTags("w", first.session, "sub")
    with pythia.session("explicit"):
        assert pythia.current_tags() == AgentTags("default", "explicit")
    ops = [s.attributes[sc.GEN_AI_OPERATION_NAME] for s in spans.get_finished_spans()]
    assert ops == ["invoke_agent", "invoke_workflow", "invoke_workflow"]


def test_decorators_sync_and_async(spans: InMemorySpanExporter) -> None:
    @pythia.agent
    def researcher() -> AgentTags | None:
        return pythia.current_tags()

    @pythia.agent("critic")
    async def critic() -> AgentTags | None:
        await asyncio.sleep(0)
        return pythia.current_tags()

    @pythia.workflow("review")
    def run() -> tuple[AgentTags | None, AgentTags | None]:
        return researcher(), asyncio.run(critic())

    a, b = run()
    assert a.agent == "researcher" and b.agent == "critic"
    assert a.session == b.session and a.workflow == "review"
    assert researcher.__name__ == "researcher"


def test_errors_are_recorded_and_reraised(spans: InMemorySpanExporter) -> None:
    with pytest.raises(KeyError):
        with pythia.workflow("w"), pythia.agent("a"):
            raise KeyError("boom")
    assert pythia.current_tags() is None
    for span in spans.get_finished_spans():
        assert not span.status.is_ok
        assert span.attributes[sc.ERROR_TYPE] == "KeyError"


async def test_tasks_keep_their_own_tags(spans: InMemorySpanExporter) -> None:
    async def one(i: int) -> tuple[int, AgentTags | None]:
        async with pythia.workflow("w", session=f"s{i}"), pythia.agent(f"a{i}"):
            await asyncio.sleep(0.001 * (5 - i))
            return i, pythia.current_tags()

    for i, tags in await asyncio.gather(*(one(i) for i in range(5))):
        assert tags == AgentTags("w", f"s{i}", f"a{i}")


def test_bind_context_carries_tags_into_threads(spans: InMemorySpanExporter) -> None:
    with pythia.workflow("w", session="s"), pythia.agent("a"):
        with ThreadPoolExecutor(2) as pool:
            bound = pool.submit(pythia.bind_context(pythia.current_tags)).result()
            unbound = pool.submit(pythia.current_tags).result()
    assert bound == AgentTags("w", "s", "a")
    assert unbound is None
