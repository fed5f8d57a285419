"""LangGraph with real ChatOpenAI nodes against the loopback server: every request tagged."""

from __future__ import annotations

import asyncio
import operator
from collections import Counter
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import pythia_sdk as pythia
from pythia_sdk import _semconv as sc
from pythia_sdk.integrations.langgraph import agent_path
from tests.pythia_sdk.fake_openai import FakeOpenAI


class State(TypedDict):
    notes: Annotated[list[str], operator.add]
    drafts: int


def build(base_url: str, async_researcher: bool = True) -> Any:
    llm = ChatOpenAI(base_url=base_url, api_key="unused", model="m")

    def planner(state: State) -> dict[str, Any]:
        llm.invoke("plan the work")
        return {"notes": ["plan"]}

    def fan_out(state: State) -> list[Send]:
        return [Send("researcher", {"notes": [f"topic {i}"], "drafts": 0}) for i in range(3)]

    async def researcher_async(state: State) -> dict[str, Any]:
        await llm.ainvoke("research " + state["notes"][0])
        return {"notes": ["found"]}

    def researcher_sync(state: State) -> dict[str, Any]:
        llm.invoke("research " + state["notes"][0])
        return {"notes": ["found"]}

    def checker(state: State) -> dict[str, Any]:
        llm.invoke("check the facts")
        return {"notes": ["checked"]}

    sub = StateGraph(State)
    sub.add_node("checker", checker)
    sub.add_edge(START, "checker")
    review = sub.compile()

    streaming = ChatOpenAI(base_url=base_url, api_key="unused", model="m", streaming=True)

    def writer(state: State) -> dict[str, Any]:
        streaming.invoke("write the draft")  # a streamed completion inside a node
        return {"drafts": state.get("drafts", 0) + 1}

    def again(state: State) -> str:
        return "writer" if state["drafts"] < 2 else END

    graph = StateGraph(State)
    graph.add_node("planner", planner)
    graph.add_node("researcher", researcher_async if async_researcher else researcher_sync)
    graph.add_node("review", review)
    graph.add_node("writer", writer)
    graph.add_edge(START, "planner")
    graph.add_conditional_edges("planner", fan_out, ["researcher"])
    graph.add_edge("researcher", "review")
    graph.add_edge("review", "writer")
    graph.add_conditional_edges("writer", again, ["writer", END])
    return graph.compile(name="research")


def sync_graph(base_url: str) -> Any:
    """The same shape with only sync nodes (LangGraph runs them in threads)."""
    return build(base_url, async_researcher=False)


EXPECTED = Counter({
    ("planner", None): 1, ("researcher", "planner"): 3, ("review/checker", "review"): 1,
    ("writer", None): 2,
})


def by_session(fake: FakeOpenAI) -> dict[str, Counter[tuple[str | None, str | None]]]:
    out: dict[str, Counter[tuple[str | None, str | None]]] = {}
    for call in fake.model_calls():
        assert call.tag("workflow") == "deep_research"
        out.setdefault(call.tag("session") or "", Counter())[(call.tag("agent"), call.tag("parent"))] += 1
    return out


def test_agent_path() -> None:
    assert agent_path("review:1a|checker:2b") == "review/checker"
    assert agent_path("planner:9") == "planner"


def test_sync_invoke_subgraph_loop_and_fanout(fake: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    graph = pythia.instrument(sync_graph(fake.base_url), workflow="deep_research")
    graph.invoke({"notes": [], "drafts": 0})
    graph.invoke({"notes": [], "drafts": 0}, {"configurable": {"thread_id": "thread-7"}})
    sessions = by_session(fake)
    assert len(sessions) == 2 and "thread-7" in sessions
    for counts in sessions.values():
        assert counts == EXPECTED


# ChatOpenAI caches its async HTTP client per process: keep one loop for them all.
@pytest.mark.asyncio(loop_scope="session")
async def test_async_concurrent_invocations(fake: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    graph = pythia.instrument(build(fake.base_url), workflow="deep_research")
    await asyncio.gather(*(graph.ainvoke({"notes": [], "drafts": 0}) for _ in range(4)),
                         graph.abatch([{"notes": [], "drafts": 0}] * 2))
    sessions = by_session(fake)
    assert len(sessions) == 6
    for counts in sessions.values():
        assert counts == EXPECTED


# ChatOpenAI caches its async HTTP client per process: keep one loop for them all.
@pytest.mark.asyncio(loop_scope="session")
async def test_spans_form_the_workflow_tree(fake: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    graph = pythia.instrument(build(fake.base_url), workflow="deep_research")
    async for _ in graph.astream({"notes": [], "drafts": 0}):
        pass
    finished = spans.get_finished_spans()
    by_id = {s.context.span_id: s for s in finished}
    (root,) = [s for s in finished if s.attributes[sc.GEN_AI_OPERATION_NAME] == "invoke_workflow"]
    assert root.name == "invoke_workflow deep_research"
    assert root.parent is None
    chats = [s for s in finished if s.attributes[sc.GEN_AI_OPERATION_NAME] == "chat"]
    assert len(chats) == 7
    for chat in chats:
        agent_span = by_id[chat.parent.span_id]
        assert agent_span.name == f"invoke_agent {chat.attributes[sc.GEN_AI_AGENT_NAME]}"
        assert chat.context.trace_id == root.context.trace_id
    checker = [s for s in finished if s.name == "invoke_agent review/checker"][0]
    assert by_id[checker.parent.span_id].name == "invoke_agent review"
    assert root.end_time >= max(s.end_time for s in finished)


def test_stream_and_batch(fake: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    graph = pythia.instrument(sync_graph(fake.base_url), workflow="deep_research")
    for _ in graph.stream({"notes": [], "drafts": 0}, stream_mode="updates"):
        pass
    graph.batch([{"notes": [], "drafts": 0}] * 2)
    sessions = by_session(fake)
    assert len(sessions) == 3
    assert all(counts == EXPECTED for counts in sessions.values())


def test_no_context_leaks_out_of_a_stream(fake: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    graph = pythia.instrument(sync_graph(fake.base_url), workflow="deep_research")
    for _ in graph.stream({"notes": [], "drafts": 0}):
        assert pythia.current_tags() is None
    assert pythia.current_tags() is None


def test_joins_an_enclosing_session(fake: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    graph = pythia.instrument(sync_graph(fake.base_url), workflow="deep_research")
    with pythia.workflow("deep_research", session="outer"):
        graph.invoke({"notes": [], "drafts": 0})
    assert list(by_session(fake)) == ["outer"]
    roots = [s for s in spans.get_finished_spans()
             if s.attributes[sc.GEN_AI_OPERATION_NAME] == "invoke_workflow"]
    assert len(roots) == 1  # only the session's owner ends it


def test_prebuilt_react_agent_with_tools(fake: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    from langgraph.prebuilt import create_react_agent

    @tool
    def lookup(query: str) -> str:
        """Look a fact up."""
        return "42"

    def responder(body: dict[str, Any]) -> dict[str, Any]:
        if body["messages"][-1]["role"] == "tool":
            return {"content": "the answer is 42"}
        return {"tool_calls": [{"id": "call_1", "type": "function",
                                "function": {"name": "lookup", "arguments": '{"query": "x"}'}}]}

    fake.responder = responder
    llm = ChatOpenAI(base_url=fake.base_url, api_key="unused", model="m")
    agent = create_react_agent(llm, [lookup])
    pythia.instrument(agent, workflow="react")
    result = agent.invoke({"messages": [("user", "what is it?")]})
    assert result["messages"][-1].content == "the answer is 42"
    calls = fake.model_calls()
    assert [c.tag("agent") for c in calls] == ["agent", "agent"]
    assert len({c.tag("session") for c in calls}) == 1
    tools = [s for s in spans.get_finished_spans() if s.name == "execute_tool lookup"]
    assert len(tools) == 1
    assert tools[0].attributes[sc.GEN_AI_TOOL_NAME] == "lookup"


def _tool_then_answer(body: dict[str, Any]) -> dict[str, Any]:
    if body["messages"][-1]["role"] == "tool":
        return {"content": "the answer is 42"}
    return {"tool_calls": [{"id": "call_1", "type": "function",
                            "function": {"name": "lookup", "arguments": '{"query": "x"}'}}]}


@tool
def lookup(query: str) -> str:
    """Look a fact up."""
    return "42"


def test_langchain_create_agent(fake: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    """langchain>=1.0's create_agent: a compiled graph whose "model" node calls the LLM;
    its name is the workflow, each invocation a session (the thread_id when given)."""
    agents = pytest.importorskip("langchain.agents")
    from langgraph.checkpoint.memory import InMemorySaver

    fake.responder = _tool_then_answer
    llm = ChatOpenAI(base_url=fake.base_url, api_key="unused", model="m")
    agent = agents.create_agent(llm, [lookup], name="fact_checker", system_prompt="Be brief.",
                                checkpointer=InMemorySaver())
    pythia.instrument(agent)
    first = agent.invoke({"messages": [("user", "what is it?")]},
                         {"configurable": {"thread_id": "t-1"}})
    assert first["messages"][-1].content == "the answer is 42"
    agent.invoke({"messages": [("user", "and now?")]}, {"configurable": {"thread_id": "t-2"}})
    calls = fake.model_calls()
    assert [(c.tag("workflow"), c.tag("session"), c.tag("agent"), c.tag("parent"))
            for c in calls] == [("fact_checker", "t-1", "model", None)] * 2 + \
        [("fact_checker", "t-2", "model", None)] * 2
    finished = spans.get_finished_spans()
    by_id = {s.context.span_id: s for s in finished}
    tools = [s for s in finished if s.name == "execute_tool lookup"]
    assert len(tools) == 2
    assert all(by_id[t.parent.span_id].name == "invoke_agent tools" for t in tools)
    assert all(t.attributes[sc.GEN_AI_TOOL_CALL_ID] == "call_1" for t in tools)
    chats = [s for s in finished if s.attributes[sc.GEN_AI_OPERATION_NAME] == "chat"]
    assert {s.attributes[sc.GEN_AI_CONVERSATION_ID] for s in chats} == {"t-1", "t-2"}


# ChatOpenAI caches its async HTTP client per process: keep one loop for them all.
@pytest.mark.asyncio(loop_scope="session")
async def test_create_agents_as_subgraphs_of_a_supervisor(
        fake: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    """Two create_agent agents as nodes of one graph: each call carries the node path."""
    agents = pytest.importorskip("langchain.agents")

    fake.responder = _tool_then_answer
    llm = ChatOpenAI(base_url=fake.base_url, api_key="unused", model="m")

    class Team(TypedDict):
        messages: Annotated[list[Any], operator.add]

    team = StateGraph(Team)
    team.add_node("researcher", agents.create_agent(llm, [lookup], name="researcher"))
    team.add_node("writer", agents.create_agent(llm, [], name="writer"))
    team.add_edge(START, "researcher")
    team.add_edge("researcher", "writer")
    graph = pythia.instrument(team.compile(name="supervisor"))
    await asyncio.gather(*(graph.ainvoke({"messages": [("user", f"topic {i}")]})
                           for i in range(2)))
    calls = fake.model_calls()
    assert len({c.tag("session") for c in calls}) == 2
    per_session = Counter((c.tag("workflow"), c.tag("agent"), c.tag("parent")) for c in calls)
    assert per_session == Counter({("supervisor", "researcher/model", "researcher"): 4,
                                   ("supervisor", "writer/model", "writer"): 2})
