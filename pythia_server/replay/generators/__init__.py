"""Seeded generators of parametrised agent workflows, each calibrated to a named source.

``GENERATORS`` maps the kind a user types to ``generate(sessions, seed) -> requests``.
"""

from __future__ import annotations

from collections.abc import Callable

from pythia_server.replay.generators.coding_agent import generate_coding_agent
from pythia_server.replay.generators.deep_research import generate_deep_research
from pythia_server.replay.generators.writer_reviewer import generate_writer_reviewer
from pythia_server.replay.workload import WorkloadRequest

__all__ = [
    "GENERATORS",
    "generate_coding_agent",
    "generate_deep_research",
    "generate_writer_reviewer",
]

GENERATORS: dict[str, Callable[[int, int], list[WorkloadRequest]]] = {
    "coding-agent": generate_coding_agent,
    "deep-research": generate_deep_research,
    "writer-reviewer": generate_writer_reviewer,
}
