import pytest

from pythia_server.profiler.automaton import ContextModel
from pythia_server.profiler.steps import Step
from pythia_server.profiler.types import END, START


def _steps(agents: list[str]) -> list[Step]:
    return [Step(a, 1, float(i), float(i) + 0.5, 10) for i, a in enumerate(agents)]


def test_loop_count_state_predicts_the_loop_exit_that_last_agent_markov_cannot() -> None:
    # A (B C){3} D: after C, Markov sees "B" twice as often as "D" and always says B.
    model = ContextModel(max_order=3, loop_count_cap=8, half_life_sessions=50, max_contexts=10_000)
    agents = ["A", "B", "C", "B", "C", "B", "C", "D"]
    for _ in range(30):
        model.learn(_steps(agents), ended=True)
    assert model.accuracy(model.chosen.name) > model.accuracy("markov")
    assert model.chosen.name != "markov"
    history = [START, *agents[:7]]  # ... B C, third C
    assert model.lookup(history, visits=3).top == "D"
    assert model.lookup(history[:4], visits=1).top == "B"  # first C: loop again
    markov = next(s for s in model.specs if s.name == "markov")
    assert model.lookup(history, 3, markov).top == "B"


def test_cost_to_go_counts_remaining_steps_and_work() -> None:
    model = ContextModel(max_order=2, loop_count_cap=8, half_life_sessions=50, max_contexts=10_000)
    for _ in range(5):
        model.learn(_steps(["A", "B", "C"]), ended=True)
    stats = model.lookup([START, "A"], 1)
    assert stats.ranked[0] == ("B", 1.0)
    assert stats.steps_sum / stats.ended_weight == 2.0
    assert stats.work_sum / stats.ended_weight == 20.0
    assert model.lookup([START, "A", "B", "C"], 1).top == END


def test_decay_relearns_a_changed_workflow() -> None:
    model = ContextModel(max_order=1, loop_count_cap=8, half_life_sessions=5, max_contexts=10_000)
    for _ in range(50):
        model.learn(_steps(["A", "B"]), ended=True)
    for _ in range(10):
        model.learn(_steps(["A", "C"]), ended=True)
    assert model.lookup([START, "A"], 1).top == "C"


def test_rare_edges_are_pruned_from_the_summary_edges() -> None:
    model = ContextModel(max_order=1, loop_count_cap=8, half_life_sessions=1000, max_contexts=10_000)
    for i in range(100):
        model.learn(_steps(["A", "Z" if i == 0 else "B"]), ended=True)
    edges = {(a, b) for a, b, _ in model.edges(0.05)}
    assert ("A", "B") in edges and ("A", "Z") not in edges
    assert (START, "A") in edges and ("B", END) in edges


def test_context_table_is_capped() -> None:
    model = ContextModel(max_order=3, loop_count_cap=8, half_life_sessions=50, max_contexts=50)
    for i in range(200):
        model.learn(_steps([f"a{i}", f"b{i}", f"c{i}"]), ended=True)
    assert len(model.table) <= 50


def test_truncated_sessions_count_for_transitions_but_not_for_cost_to_go() -> None:
    model = ContextModel(max_order=2, loop_count_cap=8, half_life_sessions=1e9, max_contexts=10_000)
    model.learn(_steps(["A", "B", "C"]), ended=True)
    model.learn(_steps(["A", "B", "B", "B"]), ended=False)  # evicted: A->B, B->B, B->B learned
    after_a = model.lookup([START, "A"], 1)
    assert after_a.ended_weight == pytest.approx(after_a.total / 2)
    assert after_a.steps_sum / after_a.ended_weight == pytest.approx(2.0)  # the ended session's B, C


def test_the_chosen_candidate_is_scored_on_the_model_before_the_session() -> None:
    # Each returned score counts hits of predictions made before that session was learned:
    # a never-seen workflow has no hit at all on its first session.
    model = ContextModel(max_order=3, loop_count_cap=8, half_life_sessions=10, max_contexts=10_000)
    first = model.learn(_steps(["A", "B", "C"]), ended=True)
    assert all(hits == 0 for hits, _ in first.values())
    second = model.learn(_steps(["A", "B", "C"]), ended=True)
    assert all(score == (3, 3) for score in second.values())  # after A, B and C (the end)
