"""An AutoGen AgentChat team (SelectorGroupChat of three agents) served through pythia-server.

A product team (planner, coder, reviewer) works on a task. ``pythia.instrument(team,
workflow="code_review")`` makes each ``team.run`` one session and the speaking agent the
agent; the selector's own model calls carry the agent ``selector``. AutoGen's
``OpenAIChatCompletionClient`` refuses per-call headers, so the tags are added below it,
on the openai client it wraps.

The simulated engine answers with synthetic text, which names no participant: a
``selector_func`` picks the speaker on most turns and leaves every third turn to the
model (where AutoGen falls back to the previous speaker when the reply names nobody).

    python examples/autogen_team.py --base-url http://127.0.0.1:8000/v1 [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from autogen_agentchat import TRACE_LOGGER_NAME
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import SelectorGroupChat
from autogen_ext.models.openai import OpenAIChatCompletionClient

import pythia_sdk as pythia

WORKFLOW = "code_review"
ROLES = {
    "planner": "You are the planner of a small software team. Break the task into concrete "
               "steps, name who does each, and define when the work is done.",
    "coder": "You are a careful Python developer. Implement the current step with tests. "
             "Reply with code and a one-line summary of what changed.",
    "reviewer": "You are a strict code reviewer. Check the latest code for bugs, missing "
                "tests and unclear names. Reply APPROVE or a numbered list of fixes.",
}
ORDER = ["planner", "coder", "reviewer", "coder", "reviewer"]
TASKS = ["Write a function that parses ISO-8601 durations.",
         "Add retry with exponential backoff to an HTTP client.",
         "Implement an LRU cache with a size limit in bytes."]
MODEL_INFO = {"vision": False, "function_calling": True, "json_output": False,
              "family": "unknown", "structured_output": False}


def build_team(base_url: str, model: str) -> SelectorGroupChat:
    client = OpenAIChatCompletionClient(model=model, base_url=base_url, api_key="unused",
                                        model_info=MODEL_INFO, max_tokens=256)
    agents = [AssistantAgent(name, model_client=client, system_message=prompt,
                             description=prompt.split(".")[0])
              for name, prompt in ROLES.items()]

    def select(messages: Sequence[Any]) -> str | None:
        turn = sum(1 for m in messages if getattr(m, "source", "user") != "user")
        if turn % 3 == 2:
            return None  # let the model (the "selector" agent) choose
        return ORDER[turn % len(ORDER)]

    return SelectorGroupChat(agents, model_client=client, selector_func=select,
                             max_selector_attempts=1, allow_repeated_speaker=True,
                             termination_condition=MaxMessageTermination(len(ORDER) + 1))


async def _served_model(base_url: str) -> str:
    import openai

    async with openai.AsyncOpenAI(base_url=base_url, api_key="unused") as client:
        return (await client.models.list()).data[0].id


async def run(base_url: str, runs: int = 3, model: str | None = None) -> None:
    model = model or await _served_model(base_url)
    logging.getLogger(TRACE_LOGGER_NAME).setLevel(logging.ERROR)  # "failed to select" on synthetic text
    for index in range(runs):  # a team runs one task at a time; each run is a session
        team = pythia.instrument(build_team(base_url, model), workflow=WORKFLOW)
        result = await team.run(task=TASKS[index % len(TASKS)])
        speakers = [getattr(m, "source", "?") for m in result.messages]
        print(f"run {index + 1}: {' -> '.join(speakers)}")
    await asyncio.to_thread(pythia.flush, 10.0)


def main(base_url: str = "http://127.0.0.1:8000/v1", runs: int = 3) -> None:
    asyncio.run(run(base_url, runs))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    main(args.base_url, args.runs)
