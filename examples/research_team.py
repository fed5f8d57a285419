"""A deep-research team in LangGraph, served through pythia-server.

    planner -> N researchers (parallel, via Send) -> writer -> reviewer
                                                        ^          |
                                                        +-- revise-+  (at most MAX_REVISIONS)

Every node is a ``ChatOpenAI`` call with a fixed role prompt, so the same prefixes recur
across sessions (what Pythia's cache policies exploit). The graph is instrumented with
``pythia.instrument(graph, workflow="deep_research")``: each invocation is one session and
each node an agent; the researchers carry ``planner`` as their parent.

The simulated engine answers with synthetic text, so the reviewer's verdict and the
number of researchers are drawn from a per-session seed instead of parsed from replies.

    python examples/research_team.py --base-url http://127.0.0.1:8000/v1 --sessions 8
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import random
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

import pythia_sdk as pythia

WORKFLOW = "deep_research"
MAX_REVISIONS = 2
MIN_RESEARCHERS, MAX_RESEARCHERS = 2, 4

#: Output budget per role, in tokens (the simulated engine generates this many).
MAX_TOKENS = {"planner": 192, "researcher": 384, "writer": 640, "reviewer": 96}

ROLE_PROMPTS = {
    "planner": (
        "You are the lead planner of a research team. Given a research question, break it "
        "into independent sub-questions that can be investigated in parallel by separate "
        "researchers. For each sub-question, state what evidence would answer it, which "
        "kinds of sources are most reliable for it, and what a researcher should avoid. "
        "Keep the plan concise, numbered, and free of overlap between sub-questions."
    ),
    "researcher": (
        "You are a meticulous research analyst. You investigate exactly one sub-question "
        "of a larger study. Report the key findings with the strength of the evidence for "
        "each, note disagreements between sources, give concrete figures where they exist, "
        "and list open questions. Do not speculate beyond the evidence. Write compact notes "
        "that a writer can turn into prose without re-reading the sources."
    ),
    "writer": (
        "You are a senior technical writer. From the research notes provided, write a "
        "clear, well-structured report that answers the research question: an executive "
        "summary, one section per finding, the caveats, and a short conclusion. Attribute "
        "claims to the notes they come from. If reviewer feedback is provided, revise the "
        "previous draft to address every point of it."
    ),
    "reviewer": (
        "You are an exacting reviewer. Check the draft report against the research notes: "
        "unsupported claims, missing caveats, unclear structure, factual inconsistencies. "
        "Reply APPROVE if the draft is ready to publish; otherwise reply REVISE followed by "
        "a short numbered list of the changes required."
    ),
}

QUESTIONS = [
    "How do grid-scale batteries compare with pumped hydro for daily load shifting?",
    "What limits the adoption of heat pumps in cold climates?",
    "Which interventions most reduce hospital readmission rates for heart failure?",
    "How does remote work affect productivity in software teams?",
    "What are the trade-offs of small modular nuclear reactors?",
    "How effective are carbon border adjustment mechanisms?",
    "What determines the cost of desalinated water at scale?",
    "How reliable are large language models as code reviewers?",
]
ANGLES = ["costs", "technical limits", "evidence from deployments", "policy and regulation",
          "environmental impact", "open research problems"]


class ResearchState(TypedDict, total=False):
    question: str
    seed: int
    subtopics: list[str]
    notes: Annotated[list[str], operator.add]
    draft: str
    feedback: str
    revisions: int
    verdict: str


class ResearcherInput(TypedDict):
    question: str
    subtopic: str


LlmFactory = Callable[[str], Any]


def build_graph(llm_factory: LlmFactory) -> Any:
    """The compiled graph; ``llm_factory(role)`` gives each role its chat model."""
    llms = {role: llm_factory(role) for role in ROLE_PROMPTS}

    async def ask(role: str, prompt: str) -> str:
        reply = await llms[role].ainvoke(
            [SystemMessage(ROLE_PROMPTS[role]), HumanMessage(prompt)])
        return str(reply.content)

    async def planner(state: ResearchState) -> ResearchState:
        rng = random.Random(state["seed"])
        count = rng.randint(MIN_RESEARCHERS, MAX_RESEARCHERS)
        subtopics = [f"{state['question']} Focus: {angle}." for angle in rng.sample(ANGLES, count)]
        await ask("planner", f"Research question: {state['question']}\n"
                             f"Plan {count} sub-questions.")
        return {"subtopics": subtopics, "revisions": 0}

    def assign(state: ResearchState) -> list[Send]:
        return [Send("researcher", {"question": state["question"], "subtopic": s})
                for s in state["subtopics"]]

    async def researcher(state: ResearcherInput) -> ResearchState:
        notes = await ask("researcher", f"Study question: {state['question']}\n"
                                        f"Your sub-question: {state['subtopic']}")
        return {"notes": [notes]}

    async def writer(state: ResearchState) -> ResearchState:
        prompt = f"Research question: {state['question']}\n\nResearch notes:\n" + \
            "\n\n".join(state.get("notes", []))
        if state.get("feedback"):
            prompt += f"\n\nPrevious draft:\n{state['draft']}\n\nReviewer feedback:\n{state['feedback']}"
        return {"draft": await ask("writer", prompt)}

    async def reviewer(state: ResearchState) -> ResearchState:
        feedback = await ask("reviewer", f"Research question: {state['question']}\n\n"
                                         f"Draft report:\n{state['draft']}")
        revisions = state.get("revisions", 0)
        revise = revisions < MAX_REVISIONS and random.Random(
            f"{state['seed']}:{revisions}").random() < 0.5
        return {"feedback": feedback, "verdict": "REVISE" if revise else "APPROVE",
                "revisions": revisions + (1 if revise else 0)}

    def after_review(state: ResearchState) -> str:
        return "writer" if state["verdict"] == "REVISE" else END

    graph = StateGraph(ResearchState)
    graph.add_node("planner", planner)
    graph.add_node("researcher", researcher)
    graph.add_node("writer", writer)
    graph.add_node("reviewer", reviewer)
    graph.add_edge(START, "planner")
    graph.add_conditional_edges("planner", assign, ["researcher"])
    graph.add_edge("researcher", "writer")
    graph.add_edge("writer", "reviewer")
    graph.add_conditional_edges("reviewer", after_review, ["writer", END])
    return graph.compile(name=WORKFLOW)


def chat_model_factory(base_url: str, model: str) -> LlmFactory:
    def make(role: str) -> ChatOpenAI:
        return ChatOpenAI(base_url=base_url, api_key="unused", model=model,
                          max_tokens=MAX_TOKENS[role], temperature=0.7, max_retries=1)
    return make


async def _served_model(base_url: str) -> str:
    import openai

    async with openai.AsyncOpenAI(base_url=base_url, api_key="unused") as client:
        models = await client.models.list()
        return models.data[0].id


async def run_sessions(base_url: str, sessions: int, concurrency: int,
                       model: str | None = None) -> None:
    """Run ``sessions`` workflow runs, ``concurrency`` at a time, then flush the spans
    (the gateway ends each session when its root span arrives)."""
    model = model or await _served_model(base_url)
    graph = pythia.instrument(build_graph(chat_model_factory(base_url, model)), workflow=WORKFLOW)
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(index: int) -> None:
        async with gate:
            await graph.ainvoke({"question": QUESTIONS[index % len(QUESTIONS)], "seed": index})

    try:
        await asyncio.gather(*(one(i) for i in range(sessions)))
    finally:
        await asyncio.to_thread(pythia.flush, 10.0)
        pythia.uninstrument(graph)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--model", default=None, help="default: the first served model")
    args = parser.parse_args(argv)
    asyncio.run(run_sessions(args.base_url, args.sessions, args.concurrency, args.model))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
