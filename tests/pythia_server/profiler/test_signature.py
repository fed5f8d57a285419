import random

from pythia_server.profiler.profiler import WorkflowProfiler
from pythia_server.profiler.signature import (
    RecallTracker,
    output_bucket,
    session_recalls,
)
from pythia_server.profiler.steps import group_steps
from pythia_server.profiler.types import CallObservation

ROLE = (101, 102, 103)  # every agent's role prompt: shared by all sessions


def _call(session: str, index: int, agent: str, head: int, out: int, start_s: float | None = None) -> CallObservation:
    """A call whose prompt is the role prompt, then ``head`` (its phase prompt), then its
    own blocks (hashes are chained: a block after a differing one differs too)."""
    start = float(index) * 3.0 if start_s is None else start_s
    own = tuple(hash((session, index, start, i)) & 0xFFFFFFF for i in range(2))
    return CallObservation(
        "wf", session, agent, start, start + 2.0, prompt_tokens=6 * 64, output_tokens=out,
        call_id=f"{session}/{index}/{start}", block_hashes=(*ROLE, head, *own),
    )


def _phased_session(session: str, rng: random.Random, *, heads_repeat: bool, outputs_differ: bool) -> list[CallObservation]:
    """Rounds of "worker, then checker or fixer": which one depends on the worker's phase
    (p or q, a coin flip per round), not on the agent history."""
    calls = [_call(session, 0, "lead", 1, 50)]
    for _ in range(12):
        phase = rng.choice("pq")
        if heads_repeat:
            head = hash((session, phase)) & 0xFFFFFF  # the phase's prompt, the same each round of this run
        else:
            head = rng.randrange(1 << 30)
        out = (20 if phase == "p" else 900) if outputs_differ else 300
        calls.append(_call(session, len(calls), "worker", head, out))
        nxt = "checker" if phase == "p" else "fixer"
        calls.append(_call(session, len(calls), nxt, hash((session, nxt)) & 0xFFFFFF, 100))
    return calls


def _learn(profiler: WorkflowProfiler, sessions: list[list[CallObservation]]) -> None:
    for calls in sessions:
        for call in calls:
            profiler.observe(call)
        profiler.end_session("wf", calls[0].session, calls[-1].end_s)


def test_output_bucket_is_log2_and_capped() -> None:
    assert [output_bucket(t) for t in (0, 1, 2, 3, 4, 1000)] == [0, 1, 2, 2, 3, 10]
    assert output_bucket(10**9) == 15 and output_bucket(-5) == 0


def test_recall_names_what_followed_the_same_prompt_earlier_in_the_session() -> None:
    calls = [
        _call("s", 0, "worker", 11, 10),
        _call("s", 1, "checker", 12, 10),
        _call("s", 2, "worker", 13, 10),  # another phase: nothing to recall
        _call("s", 3, "fixer", 14, 10),
        _call("s", 4, "worker", 11, 10),  # phase 11 again: was followed by the checker
        _call("s", 5, "worker", 13, 10),  # phase 13 again: was followed by the fixer
    ]
    steps = group_steps(calls)
    assert session_recalls(calls, steps, lambda agent: 3) == [None, None, None, None, "checker", "fixer"]
    # A prompt that ends inside the role prefix has no key.
    assert session_recalls(calls, steps, lambda agent: 6) == [None] * 6


def test_live_tracker_matches_the_whole_session_pass_with_a_fanout() -> None:
    calls = [
        _call("s", 0, "planner", 11, 10),
        _call("s", 1, "searcher", 12, 10, start_s=3.0),
        _call("s", 2, "searcher", 13, 10, start_s=3.1),  # fan-out: same step
        _call("s", 3, "planner", 11, 10, start_s=6.0),
        _call("s", 4, "searcher", 13, 10, start_s=9.0),  # second branch's prompt: recalled
    ]
    steps = group_steps(calls)
    assert [s.width for s in steps] == [1, 2, 1, 1]
    step_of = [0, 1, 1, 2, 3]
    tracker = RecallTracker()
    for n in range(1, len(calls) + 1):  # brought up to date call by call
        tracker.update(calls[:n], step_of[:n], steps, lambda agent: 3)
    assert tracker.recalls == session_recalls(calls, steps, lambda agent: 3) == [None, None, "searcher", "planner"]
    tracker.reset()
    assert tracker.recalls == []


def test_a_repeated_phase_prompt_predicts_what_the_agent_history_cannot() -> None:
    rng = random.Random(3)
    profiler = WorkflowProfiler()
    _learn(profiler, [_phased_session(f"s{i}", rng, heads_repeat=True, outputs_differ=False) for i in range(40)])
    automaton = profiler.model("wf").automaton
    assert automaton.chosen.signature
    # The agent history says "worker" and nothing more: about a coin flip.
    assert automaton.accuracy(automaton.chosen.name) > automaton.accuracy("loop-3") + 0.15

    # Live: a worker step whose phase prompt was followed by the fixer earlier in this run.
    live = [
        _call("live", 0, "lead", 1, 50),
        _call("live", 1, "worker", 555, 300),
        _call("live", 2, "fixer", 9, 100),
        _call("live", 3, "worker", 777, 300),
        _call("live", 4, "checker", 9, 100),
        _call("live", 5, "worker", 555, 300),
    ]
    for call in live:
        profiler.observe(call)
    prediction = profiler.predict("wf", "live", now_s=live[-1].end_s)
    assert prediction.next_agents[0][0] == "fixer" and prediction.reason.startswith("sig-")
    # A call still arriving has no signature yet: the answer falls back to the history.
    assert profiler.predict("wf", "live", agent="worker", now_s=live[-1].end_s).next_agents


def test_a_short_output_tells_the_phase_when_prompts_do_not() -> None:
    rng = random.Random(5)
    profiler = WorkflowProfiler()
    _learn(profiler, [_phased_session(f"s{i}", rng, heads_repeat=False, outputs_differ=True) for i in range(40)])
    automaton = profiler.model("wf").automaton
    assert automaton.chosen.signature
    assert automaton.accuracy(automaton.chosen.name) > 0.95
    assert automaton.accuracy("loop-3") < 0.8  # the worker's next agent is a coin flip to it
