from pythia_server.profiler.steps import group_steps
from pythia_server.profiler.types import CallObservation

from .helpers import session_calls


def test_overlapping_calls_of_one_agent_under_one_parent_are_one_fanout_step() -> None:
    calls = session_calls("w", "s", ["planner", ("searcher", 4), "writer"])
    steps = group_steps(calls)
    assert [(s.agent, s.width) for s in steps] == [("planner", 1), ("searcher", 4), ("writer", 1)]


def test_sequential_calls_of_one_agent_stay_separate_steps() -> None:
    calls = session_calls("w", "s", ["coder", "coder", "coder"])
    assert [s.width for s in group_steps(calls)] == [1, 1, 1]


def test_overlap_under_different_parents_is_not_a_fanout() -> None:
    a = CallObservation("w", "s", "x", 0.0, 5.0, parent="p1", call_id="a")
    b = CallObservation("w", "s", "x", 1.0, 4.0, parent="p2", call_id="b")
    assert [s.width for s in group_steps([b, a])] == [1, 1]
