"""AG2 1.x agents (``from ag2 import Agent``) against the loopback server: every turn's
model calls carry the agent, nested asks keep the session and name the parent."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import pythia_sdk as pythia
from pythia_sdk import _semconv as sc
from tests.pythia_sdk.fake_openai import FakeOpenAI

ag2 = pytest.importorskip("ag2")
from ag2.config.openai import OpenAIConfig  # noqa: E402


def delegate_then_answer(body: dict[str, Any]) -> dict[str, Any]:
    """The researcher first calls its tool (which asks the writer), then answers."""
    system = body["messages"][0]["content"] if body["messages"] else ""
    if "research" not in system or body["messages"][-1]["role"] == "tool":
        return {"content": "done"}
    return {"tool_calls": [{"id": "call_7", "type": "function",
                            "function": {"name": "ask_writer", "arguments": '{"topic": "x"}'}}]}


def team(base_url: str) -> tuple[Any, Any]:
    config = OpenAIConfig(model="m", base_url=base_url, api_key="unused")
    writer = ag2.Agent("writer", "You write.", config=config)

    async def ask_writer(topic: str) -> str:
        """Ask the writer to write about a topic."""
        return str((await writer.ask(f"write about {topic}")).body)

    researcher = ag2.Agent("researcher", "You research.", config=config, tools=[ask_writer])
    return pythia.instrument(researcher, workflow="report"), pythia.instrument(writer)


async def test_turns_nested_asks_and_continuations(
        fake: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    fake.responder = delegate_then_answer
    researcher, writer = team(fake.base_url)
    reply = await researcher.ask("find facts")
    assert reply.body == "done"
    calls = fake.model_calls()
    assert [(c.tag("workflow"), c.tag("agent"), c.tag("parent")) for c in calls] == [
        ("report", "researcher", None), ("report", "writer", "researcher"),
        ("report", "researcher", None)]
    assert len({c.tag("session") for c in calls}) == 1
    fake.clear()
    await writer.ask("alone")  # its own session, its own name as the workflow
    await reply.ask("and more?")  # a continuation: the researcher again, a new session
    alone, more = fake.model_calls()[0], fake.model_calls()[-1]
    assert (alone.tag("workflow"), alone.tag("agent")) == ("writer", "writer")
    assert (more.tag("workflow"), more.tag("agent")) == ("report", "researcher")
    assert more.tag("session") not in {c.tag("session") for c in calls} | {alone.tag("session")}
    roots = [s for s in spans.get_finished_spans()
             if s.attributes[sc.GEN_AI_OPERATION_NAME] == "invoke_workflow"]
    assert len(roots) == 3  # one per top-level turn, none for the nested ask


async def test_concurrent_asks_and_an_enclosing_session(
        fake: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    researcher, writer = team(fake.base_url)
    await asyncio.gather(*(writer.ask(f"draft {i}") for i in range(5)))
    assert len({c.tag("session") for c in fake.model_calls()}) == 5
    fake.clear()
    async with pythia.workflow("report", session="outer"):
        await researcher.ask("plan")
        await writer.ask("write")
    assert [(c.tag("session"), c.tag("agent")) for c in fake.model_calls()] == [
        ("outer", "researcher"), ("outer", "writer")]
    pythia.uninstrument(writer)
    assert "ask" not in vars(writer) and not pythia.is_instrumented(writer)
