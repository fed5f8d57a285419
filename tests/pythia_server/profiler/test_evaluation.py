import pytest

from pythia_server.profiler.evaluation import evaluate, split_sessions

from .helpers import session_calls

FLOW = ["planner", ("searcher", 3), "writer", "reviewer", "writer", "reviewer"]


def _sessions(count: int, steps=FLOW, workflow: str = "research", start: float = 0.0):
    out = {}
    for i in range(count):
        calls = session_calls(workflow, f"{workflow}-{i}", steps, start_s=start + 100.0 * i)
        out[(workflow, f"{workflow}-{i}")] = calls
    return out


def test_split_is_time_ordered_per_workflow_type() -> None:
    sessions = {**_sessions(10), **_sessions(4, ["a", "b"], workflow="other", start=5_000.0)}
    train, test = split_sessions(sessions, 0.5)
    assert sorted(train) == sorted([("research", f"research-{i}") for i in range(5)] + [("other", "other-0"), ("other", "other-1")])
    latest_train = max(min(c.start_s for c in sessions[k]) for k in train if k[0] == "research")
    assert all(min(c.start_s for c in sessions[k]) > latest_train for k in test if k[0] == "research")


def test_split_rejects_a_bad_fraction() -> None:
    with pytest.raises(ValueError, match="train fraction"):
        split_sessions(_sessions(2), 1.0)


def test_a_deterministic_workflow_is_predicted_exactly() -> None:
    (score,) = evaluate(_sessions(40), 0.5)
    assert score.train_sessions == 20 and score.test_sessions == 20
    assert score.test_steps == 20 * 6
    assert score.next_agent_top1 == 1.0 and score.next_agent_top1_online == 1.0
    assert score.length_bound_coverage == 1.0 and score.length_bound_tightness == 1.0
    assert score.mode == "proactive" and score.regex == "planner searcher[x3] (writer reviewer){2}"


def test_markov_baseline_misses_the_loop_exit_that_the_chosen_model_gets() -> None:
    (score,) = evaluate(_sessions(40), 0.5)
    # After the second reviewer Markov still says "writer" (seen once per session, like END).
    assert score.markov_top1 < score.next_agent_top1
    assert score.context_model != "markov"


def test_a_workflow_that_drifts_after_training_scores_lower_frozen_than_online() -> None:
    sessions = {**_sessions(20)}
    changed = ["planner", "critic", "writer", "critic", "archivist"]
    for i in range(20, 40):
        sessions[("research", f"research-{i}")] = session_calls("research", f"research-{i}", changed, start_s=100.0 * i)
    (score,) = evaluate(sessions, 0.5)
    assert score.next_agent_top1 < 0.5 < score.next_agent_top1_online


def test_the_context_ceiling_is_the_in_sample_top1_of_the_richest_state() -> None:
    from pythia_server.profiler.evaluation import context_ceiling

    sessions = {
        ("wf", "s1"): session_calls("wf", "s1", ["A", "B"]),
        ("wf", "s2"): session_calls("wf", "s2", ["A", "C"]),
        ("wf", "s3"): session_calls("wf", "s3", ["A", "B"]),
    }
    # after A: B twice, C once (2 of 3); after B or C: always the end (3 of 3)
    assert context_ceiling(sessions, list(sessions), 3, 8) == {"wf": 5 / 6}
    # a coin-flip loop exit is as unpredictable in-sample as out of it
    loops = {("wf", f"l{i}"): session_calls("wf", f"l{i}", ["A"] * (2 + i % 2)) for i in range(4)}
    assert context_ceiling(loops, list(loops), 3, 8)["wf"] < 1.0
