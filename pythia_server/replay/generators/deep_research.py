"""Deep-research fan-out: a planner, N searchers in parallel, an aggregator.

Shape, from published descriptions of such systems (no recorded trace of one is in
``shared/workloads``, so the numbers below are stated defaults, not measurements):

- Anthropic, "How we built our multi-agent research system" (Anthropic Engineering blog,
  June 2025): a lead agent plans, then "spins up 3-5 subagents in parallel", each of which
  uses "3+ tools in parallel" in rounds of search and evaluation, then returns condensed
  findings to the lead, which writes the answer. Hence ``searchers`` = 3-5 (uniform) and
  ``search_rounds`` = 2-4 tool rounds per searcher.
- LangChain ``open_deep_research`` (GitHub, 2025): supervisor -> parallel researchers with
  their own web-search tool loop -> a final report writer; each researcher compresses its
  findings before returning them. Hence one summary call per searcher and a single
  aggregator call whose prompt holds every summary.
- Lengths: role prompts ~1,000 tokens (planner, searcher, aggregator: shared across
  sessions), a user question of 50-300 tokens, a plan of ~300-800 tokens, ~1,500 tokens of
  fetched page text per search round (a search-result page or an extract), a tool-call
  output of ~60-200 tokens, a condensed summary of ~400-900 tokens and a report of
  ~1,500-3,000 tokens. Search / fetch latency: 0.5-4 s per round (web search APIs).

Prefix structure: searchers of one session share [searcher role prompt + the question] and
differ from their own sub-question on; each searcher's rounds extend its own history; the
aggregator's prompt is [aggregator role prompt + question + plan + summaries].
Dependencies: searchers wait for the planner; the aggregator waits for every searcher's
last call (the join). Override any default through :class:`DeepResearchParams`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pythia_server.replay.generators._common import (
    Conversation,
    SessionBuilder,
    build_sessions,
)
from pythia_server.replay.workload import WorkloadRequest

__all__ = ["DeepResearchParams", "generate_deep_research"]

WORKFLOW_TYPE = "deep_research"


@dataclass(frozen=True, slots=True)
class DeepResearchParams:
    min_searchers: int = 3
    max_searchers: int = 5
    min_rounds: int = 2
    max_rounds: int = 4
    role_prompt_tokens: int = 1000
    question_tokens: tuple[int, int] = (50, 300)
    plan_tokens: tuple[int, int] = (300, 800)
    subquestion_tokens: tuple[int, int] = (40, 120)
    page_tokens: tuple[int, int] = (800, 2200)
    tool_call_tokens: tuple[int, int] = (60, 200)
    summary_tokens: tuple[int, int] = (400, 900)
    report_tokens: tuple[int, int] = (1500, 3000)
    search_latency_s: tuple[float, float] = (0.5, 4.0)
    block_size: int = 64


def generate_deep_research(
    sessions: int, seed: int = 0, params: DeepResearchParams | None = None
) -> list[WorkloadRequest]:
    """``sessions`` research runs, all starting at 0 (apply an arrival process)."""
    params = params or DeepResearchParams()
    if sessions <= 0 or not (1 <= params.min_searchers <= params.max_searchers):
        raise ValueError("need sessions > 0 and 1 <= min_searchers <= max_searchers")
    if not (1 <= params.min_rounds <= params.max_rounds):
        raise ValueError("need 1 <= min_rounds <= max_rounds")
    return build_sessions(
        sessions,
        seed,
        id_prefix="research",
        workflow_type=WORKFLOW_TYPE,
        block_size=params.block_size,
        session=lambda builder, rng: _session(builder, rng, params),
    )


def _between(rng: random.Random, bounds: tuple[int, int]) -> int:
    return rng.randint(bounds[0], bounds[1])


def _session(
    builder: SessionBuilder, rng: random.Random, p: DeepResearchParams
) -> None:
    question = _between(rng, p.question_tokens)
    role = p.role_prompt_tokens
    # Planner: role prompt + question -> plan.
    planner = Conversation()
    planner_ids = builder.shared.blocks(("deep_research", "planner"), role)
    plan = _between(rng, p.plan_tokens)
    plan_input = role + question
    planner_call = builder.call(
        "planner",
        input_length=plan_input,
        output_length=plan,
        hash_ids=builder.prompt(planner, role, plan_input, base=planner_ids),
        phase="plan",
    )
    # Searchers share [role prompt + question]; the question's blocks are this session's.
    searcher_role_ids = builder.shared.blocks(("deep_research", "searcher"), role)
    head = Conversation()
    builder.prompt(head, role, role + question, base=searcher_role_ids)
    last_calls: list[str] = []
    summaries = 0
    for _ in range(rng.randint(p.min_searchers, p.max_searchers)):
        searcher = Conversation()
        previous, wait_ms = planner_call, 0.0
        prompt_tokens = role + question + _between(rng, p.subquestion_tokens)
        base: tuple[int, ...] | None = head.hash_ids
        shared_tokens = role + question
        rounds = rng.randint(p.min_rounds, p.max_rounds)
        for round_index in range(rounds + 1):
            final = round_index == rounds
            output = _between(rng, p.summary_tokens if final else p.tool_call_tokens)
            hash_ids = builder.prompt(searcher, shared_tokens, prompt_tokens, base=base)
            previous = builder.call(
                "searcher",
                input_length=prompt_tokens,
                output_length=output,
                hash_ids=hash_ids,
                wait_for=[previous],
                delay_ms=0.0,
                tool_wait_ms=wait_ms,
                parent_agent="planner",
                phase="summarise" if final else "search",
            )
            base, shared_tokens = None, prompt_tokens
            prompt_tokens += output + _between(rng, p.page_tokens)
            wait_ms = rng.uniform(*p.search_latency_s) * 1000.0
            if final:
                summaries += output
        last_calls.append(previous)
    # Aggregator: role prompt + question + plan + every summary -> report.
    aggregator = Conversation()
    aggregator_ids = builder.shared.blocks(("deep_research", "aggregator"), role)
    aggregate_input = role + question + plan + summaries
    builder.call(
        "aggregator",
        input_length=aggregate_input,
        output_length=_between(rng, p.report_tokens),
        hash_ids=builder.prompt(aggregator, role, aggregate_input, base=aggregator_ids),
        wait_for=last_calls,
        delay_ms=0.0,
        parent_agent="planner",
        phase="report",
    )
