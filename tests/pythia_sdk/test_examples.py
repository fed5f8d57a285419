"""The three examples run against the recording server, every call tagged as documented."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.pythia_sdk.fake_openai import FakeOpenAI

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

import autogen_team  # noqa: E402
import openai_agent_loop  # noqa: E402
import research_team  # noqa: E402


# ChatOpenAI caches its async HTTP client per process: keep one loop for them all.
@pytest.mark.asyncio(loop_scope="session")
async def test_research_team(fake: FakeOpenAI) -> None:
    await research_team.run_sessions(fake.base_url, sessions=4, concurrency=2, model="m")
    calls = fake.model_calls()
    sessions: dict[str, Counter[tuple[str | None, str | None]]] = {}
    for call in calls:
        assert call.tag("workflow") == "deep_research"
        sessions.setdefault(call.tag("session") or "", Counter())[(call.tag("agent"), call.tag("parent"))] += 1
    assert len(sessions) == 4
    for counts in sessions.values():
        assert counts[("planner", None)] == 1
        researchers = counts[("researcher", "planner")]
        assert research_team.MIN_RESEARCHERS <= researchers <= research_team.MAX_RESEARCHERS
        assert 1 <= counts[("writer", None)] == counts[("reviewer", None)] <= 1 + research_team.MAX_REVISIONS
    # fixed role prompts: the system message of each role is identical across sessions
    systems = {c.tag("agent"): set() for c in calls}
    for call in calls:
        systems[call.tag("agent")].add(call.body["messages"][0]["content"])
    assert all(len(prompts) == 1 for prompts in systems.values())


async def test_autogen_team(fake: FakeOpenAI) -> None:
    await autogen_team.run(fake.base_url, runs=2, model="m")
    calls = fake.model_calls()
    assert len({c.tag("session") for c in calls}) == 2
    agents = Counter(c.tag("agent") for c in calls)
    assert set(agents) == {"planner", "coder", "reviewer", "selector"}
    assert {c.tag("workflow") for c in calls} == {"code_review"}


async def test_openai_agent_loop(fake: FakeOpenAI) -> None:
    await openai_agent_loop.run(fake.base_url, tickets=3, model="m")
    calls = fake.model_calls()
    by_session: dict[str, list[str | None]] = {}
    for call in calls:
        assert call.tag("workflow") == "support_triage"
        by_session.setdefault(call.tag("session") or "", []).append(call.tag("agent"))
    assert len(by_session) == 3
    for agents in by_session.values():
        assert agents[0] == "triage" and agents[-1] == "responder"
        assert set(agents[1:-1]) == {"specialist"}
