"""AutoGen AgentChat 0.7.5 teams against the loopback server: every model call tagged."""

from __future__ import annotations

import itertools
import json
from typing import Any

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat, SelectorGroupChat
from autogen_ext.models.openai import OpenAIChatCompletionClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import pythia_sdk as pythia
from pythia_sdk import _semconv as sc
from pythia_sdk.integrations.autogen import SELECTOR_AGENT
from tests.pythia_sdk.fake_openai import FakeOpenAI

NAMES = ["coder", "reviewer", "tester"]
MODEL_INFO = {"vision": False, "function_calling": True, "json_output": False,
              "family": "unknown", "structured_output": False}


def make_agents(base_url: str) -> tuple[list[AssistantAgent], OpenAIChatCompletionClient]:
    client = OpenAIChatCompletionClient(model="m", base_url=base_url, api_key="unused",
                                        model_info=MODEL_INFO)
    agents = [AssistantAgent(n, model_client=client, system_message=f"You are the {n}.")
              for n in NAMES]
    return agents, client


def selector_responder() -> Any:
    turn = itertools.cycle(NAMES)

    def respond(body: dict[str, Any]) -> dict[str, Any]:
        if "select the next role" in json.dumps(body.get("messages")):
            return {"content": next(turn)}
        return {"content": "done"}
    return respond


async def test_selector_group_chat_of_three(fake: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    fake.responder = selector_responder()
    agents, client = make_agents(fake.base_url)
    team = SelectorGroupChat(agents, model_client=client,
                             termination_condition=MaxMessageTermination(5))
    pythia.instrument(team, workflow="code_review")
    await team.run(task="write fizzbuzz")
    calls = fake.model_calls()
    # selector, coder, selector, reviewer, selector, tester, selector, coder
    assert [c.tag("agent") for c in calls] == [
        SELECTOR_AGENT, "coder", SELECTOR_AGENT, "reviewer", SELECTOR_AGENT, "tester",
        SELECTOR_AGENT, "coder"]
    assert {c.tag("workflow") for c in calls} == {"code_review"}
    assert len({c.tag("session") for c in calls}) == 1
    finished = spans.get_finished_spans()
    (root,) = [s for s in finished if s.attributes[sc.GEN_AI_OPERATION_NAME] == "invoke_workflow"]
    agent_spans = [s for s in finished if s.attributes[sc.GEN_AI_OPERATION_NAME] == "invoke_agent"]
    assert all(s.parent.span_id == root.context.span_id for s in agent_spans)
    assert len(agent_spans) == 8
    # a second run is a second session
    await team.run(task="and now in rust")
    assert len({c.tag("session") for c in fake.model_calls()}) == 2


async def test_round_robin_and_a_lone_agent(fake: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    agents, client = make_agents(fake.base_url)
    team = RoundRobinGroupChat(agents, termination_condition=MaxMessageTermination(4))
    pythia.instrument(team, workflow="round")
    await team.run(task="go")
    assert [c.tag("agent") for c in fake.model_calls()] == NAMES
    fake.clear()
    lone, _ = make_agents(fake.base_url)
    pythia.instrument(lone[0], workflow="solo")
    await lone[0].run(task="hi")
    (call,) = fake.model_calls()
    assert (call.tag("workflow"), call.tag("agent")) == ("solo", "coder")
    assert pythia.current_tags() is None


async def test_swarm_handoff(fake: FakeOpenAI, spans: InMemorySpanExporter) -> None:
    from autogen_agentchat.teams import Swarm

    def respond(body: dict[str, Any]) -> dict[str, Any]:
        tools = {t["function"]["name"] for t in body.get("tools") or []}
        if "transfer_to_bob" in tools:
            return {"tool_calls": [{"id": "call_1", "type": "function", "function": {
                "name": "transfer_to_bob", "arguments": "{}"}}]}
        return {"content": "bob here, done"}

    fake.responder = respond
    client = OpenAIChatCompletionClient(model="m", base_url=fake.base_url, api_key="unused",
                                        model_info=MODEL_INFO)
    alice = AssistantAgent("alice", model_client=client, handoffs=["bob"])
    bob = AssistantAgent("bob", model_client=client)
    team = Swarm([alice, bob], termination_condition=MaxMessageTermination(4))
    pythia.instrument(team, workflow="handoff")
    result = await team.run(task="help")
    assert [getattr(m, "source", None) for m in result.messages][-1] == "bob"
    calls = fake.model_calls()
    agents = [c.tag("agent") for c in calls]
    assert agents[0] == "alice" and len(agents) > 1 and set(agents[1:]) == {"bob"}
    assert {c.tag("workflow") for c in calls} == {"handoff"}
    assert len({c.tag("session") for c in calls}) == 1
