"""Writer/reviewer loop: a writer drafts, a reviewer comments, the writer revises, repeat.

Calibrated to the code-review loop of ``shared/workloads/chatdev_calls.jsonl`` (39 ChatDev
runs; OpenBMB/ChatDev, Apache-2.0), where a Programmer writes code and a Code Reviewer
comments on it for several cycles. Measured there (percentiles 0, 10, 25, 50, 75, 90, 100):

- review cycles per run (``CodeReviewComment`` phase instances): 2 x1, 3 x24, 5 x5, 6 x1,
  10 x8 (ChatDev stops early when the reviewer is satisfied, else at its cycle cap);
- first prompt of the draft (``Coding`` phase): 550, 574, 583, 755, 862, 1090, 3234;
- draft output: 305, 475, 628, 749, 1000, 1260, 1793;
- review comment output (Code Reviewer in ``CodeReviewComment``): 66, 91, 120, 195, 278,
  368, 848;
- revision output (``CodeReviewModification``): 113, 329, 508, 731, 1053, 1392, 1590;
- gaps between calls in the loop: 0 s up to the 75th percentile, 1 s at the 90th.

Conversation model (AutoGen round-robin / group-chat style): both agents see the whole
exchange; each agent's prompt is [its role prompt (``role_prompt_tokens``, shared across
sessions)] + task + every message so far, so each call extends that agent's previous
prompt. Calls are sequential; the gap between calls is ``client_gap_ms`` (default 0).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from pythia_server.replay.generators._common import (
    Conversation,
    QuantileTable,
    SessionBuilder,
    build_sessions,
)
from pythia_server.replay.workload import WorkloadRequest

__all__ = ["WriterReviewerParams", "generate_writer_reviewer"]

WORKFLOW_TYPE = "writer_reviewer"
_PERCENTS = (0, 10, 25, 50, 75, 90, 100)

REVIEW_CYCLES = QuantileTable(
    (0.0, 1 / 39, 1 / 39, 25 / 39, 25 / 39, 30 / 39, 30 / 39, 31 / 39, 31 / 39, 1.0),
    (2, 2, 3, 3, 5, 5, 6, 6, 10, 10),
)
FIRST_PROMPT_TOKENS = QuantileTable.percentiles(
    _PERCENTS, (550, 574, 583, 755, 862, 1090, 3234)
)
DRAFT_TOKENS = QuantileTable.percentiles(
    _PERCENTS, (305, 475, 628, 749, 1000, 1260, 1793)
)
REVIEW_TOKENS = QuantileTable.percentiles(_PERCENTS, (66, 91, 120, 195, 278, 368, 848))
REVISION_TOKENS = QuantileTable.percentiles(
    _PERCENTS, (113, 329, 508, 731, 1053, 1392, 1590)
)


@dataclass(frozen=True, slots=True)
class WriterReviewerParams:
    role_prompt_tokens: int = 250
    review_cycles: QuantileTable = field(default=REVIEW_CYCLES)
    client_gap_ms: float = 0.0
    block_size: int = 64


def generate_writer_reviewer(
    sessions: int, seed: int = 0, params: WriterReviewerParams | None = None
) -> list[WorkloadRequest]:
    """``sessions`` writer/reviewer loops, all starting at 0 (apply an arrival process)."""
    params = params or WriterReviewerParams()
    if sessions <= 0:
        raise ValueError("sessions must be positive")
    return build_sessions(
        sessions,
        seed,
        id_prefix="review",
        workflow_type=WORKFLOW_TYPE,
        block_size=params.block_size,
        session=lambda builder, rng: _session(builder, rng, params),
    )


def _session(
    builder: SessionBuilder, rng: random.Random, p: WriterReviewerParams
) -> None:
    role = p.role_prompt_tokens
    task = max(1, round(FIRST_PROMPT_TOKENS.sample(rng)) - role)
    writer, reviewer = Conversation(), Conversation()
    writer_role = builder.shared.blocks(("writer_reviewer", "writer"), role)
    reviewer_role = builder.shared.blocks(("writer_reviewer", "reviewer"), role)
    draft = round(DRAFT_TOKENS.sample(rng))
    previous = builder.call(
        "writer",
        input_length=role + task,
        output_length=draft,
        hash_ids=builder.prompt(writer, role, role + task, base=writer_role),
        phase="draft",
    )
    writer_next = role + task + draft  # the writer's next prompt grows from here
    reviewer_next, reviewer_base = role + task + draft, reviewer_role
    for _ in range(max(1, round(p.review_cycles.sample(rng)))):
        comment = round(REVIEW_TOKENS.sample(rng))
        shared_tokens = role if reviewer.tokens == 0 else reviewer.tokens
        previous = builder.call(
            "reviewer",
            input_length=reviewer_next,
            output_length=comment,
            hash_ids=builder.prompt(
                reviewer,
                shared_tokens,
                reviewer_next,
                base=reviewer_base if reviewer.tokens == 0 else None,
            ),
            wait_for=[previous],
            delay_ms=p.client_gap_ms,
            parent_agent=None,
            phase="review",
        )
        writer_next += comment
        revision = round(REVISION_TOKENS.sample(rng))
        previous = builder.call(
            "writer",
            input_length=writer_next,
            output_length=revision,
            hash_ids=builder.prompt(writer, writer.tokens, writer_next),
            wait_for=[previous],
            delay_ms=p.client_gap_ms,
            phase="revise",
        )
        writer_next += revision
        reviewer_next += comment + revision
