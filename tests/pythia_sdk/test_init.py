"""The public face: exactly these names, and instrument() refuses what it does not know."""

from __future__ import annotations

import pytest

import pythia_sdk as pythia


def test_public_names_are_pinned() -> None:
    assert sorted(pythia.__all__) == [
        "AgentTags", "agent", "bind_context", "current_tags", "flush", "instrument",
        "is_instrumented", "session", "tool", "uninstrument", "workflow",
    ]


def test_unknown_targets_are_refused() -> None:
    with pytest.raises(TypeError, match="does not know"):
        pythia.instrument(object())
    with pytest.raises(ValueError, match="unknown instrumentation target"):
        pythia.instrument("nope")
    from langgraph.graph import StateGraph

    with pytest.raises(TypeError, match="compile"):
        pythia.instrument(StateGraph(dict))
    pythia.uninstrument()
