import random

from pythia_server.profiler.profiler import WorkflowProfiler
from pythia_server.profiler.types import (
    END,
    OTHER_AGENT,
    UNKNOWN_AGENT,
    CallObservation,
    ProfilerConfig,
)

from .helpers import feed, session_calls

RESEARCH = ["planner", ("searcher", 4), "writer", "reviewer", "writer", "reviewer"]


def _trained(steps=RESEARCH, sessions: int = 30, config: ProfilerConfig | None = None) -> WorkflowProfiler:
    profiler = WorkflowProfiler(config)
    for i in range(sessions):
        feed(profiler, session_calls("research", f"s{i}", steps, start_s=100.0 * i))
    return profiler


def test_fanout_is_predicted_with_its_width_and_its_join_agent() -> None:
    profiler = _trained()
    live = session_calls("research", "live", RESEARCH, start_s=10_000.0)
    profiler.observe(live[0])  # the planner finished
    after_planner = profiler.predict("research", "live")
    assert after_planner.next_agent == "searcher"
    assert after_planner.expected_fanout == 4.0
    assert after_planner.next_arrival_s == live[1].start_s  # the learned planner -> searcher gap
    for call in live[1:5]:
        profiler.observe(call)
    assert profiler.predict("research", "live").next_agent == "writer"  # the join


def test_loop_exit_and_remaining_steps_use_the_loop_count() -> None:
    profiler = _trained()
    live = session_calls("research", "live", RESEARCH, start_s=10_000.0)
    for call in live[:7]:  # planner, 4 searchers, writer, reviewer
        profiler.observe(call)
    first_review = profiler.predict("research", "live")
    assert first_review.next_agent == "writer" and first_review.expected_remaining_steps == 2.0
    for call in live[7:]:
        profiler.observe(call)
    second_review = profiler.predict("research", "live")
    assert second_review.next_agents[0] == (END, 1.0)
    assert second_review.expected_remaining_steps == 0.0
    assert second_review.expected_remaining_work_tokens == 0.0


def test_arriving_call_gets_its_agents_bound_and_prefix() -> None:
    profiler = _trained()
    live = session_calls("research", "live", RESEARCH, start_s=10_000.0)
    for call in live[:6]:
        profiler.observe(call)
    arriving = profiler.predict("research", "live", agent="reviewer", now_s=live[6].start_s)
    assert arriving.output_bound_tokens == 100
    assert arriving.next_agent == "writer"
    assert arriving.prefix.kind in ("role", "shared")
    assert arriving.prefix.tokens > 0


def test_consistent_workflow_is_promoted_then_demoted_when_it_changes() -> None:
    profiler = _trained(sessions=30)
    assert profiler.mode("research") == "proactive"
    rng = random.Random(2)
    agents = ["planner", "critic", "summariser", "archivist", "searcher", "writer"]
    for i in range(10):  # the workflow changes into one without a stable order
        changed = rng.sample(agents, k=6)
        feed(profiler, session_calls("research", f"new{i}", changed, start_s=10_000.0 + 100 * i))
    state = profiler.snapshot().workflows[0].mode
    assert state.promotions == 1 and state.demotions == 1
    assert state.mode == "shadow" and profiler.predict("research", "x").mode == "shadow"


def test_a_workflow_that_changes_into_another_stable_one_may_stay_proactive() -> None:
    # The decayed model relearns a new stable order within a session or two: no demotion
    # needed when predictions stay good on the latest sessions.
    profiler = _trained(sessions=30)
    changed = ["planner", "critic", "planner", "critic", "summariser"]
    for i in range(15):
        feed(profiler, session_calls("research", f"new{i}", changed, start_s=10_000.0 + 100 * i))
    assert profiler.predict("research", "new-live").next_agent == "planner"
    live = session_calls("research", "new-live", changed, start_s=20_000.0)
    profiler.observe(live[0])
    assert profiler.predict("research", "new-live").next_agent == "critic"


def test_duplicated_observations_are_learned_once() -> None:
    once = _trained(sessions=5)
    twice = WorkflowProfiler()
    for i in range(5):
        calls = session_calls("research", f"s{i}", RESEARCH, start_s=100.0 * i)
        feed(twice, calls + calls)
    assert twice.dropped_observations == 5 * 9
    a, b = once.snapshot().workflows[0], twice.snapshot().workflows[0]
    assert (a.calls_learned, a.edges, a.regex, a.agents) == (b.calls_learned, b.edges, b.regex, b.agents)


def test_out_of_order_observations_learn_the_same_model() -> None:
    in_order = _trained(sessions=10)
    shuffled = WorkflowProfiler()
    rng = random.Random(5)
    for i in range(10):
        calls = session_calls("research", f"s{i}", RESEARCH, start_s=100.0 * i)
        rng.shuffle(calls)
        for call in calls:
            shuffled.observe(call)
        shuffled.end_session("research", f"s{i}", 1e9)
    a, b = in_order.snapshot().workflows[0], shuffled.snapshot().workflows[0]
    assert (a.edges, a.regex, a.agents, a.fanout) == (b.edges, b.regex, b.agents, b.fanout)
    assert a.regex == "planner searcher[x4] (writer reviewer){2}"


def test_calls_without_an_agent_are_learned_under_one_unknown_name() -> None:
    profiler = WorkflowProfiler()
    for i in range(5):
        calls = session_calls("w", f"s{i}", ["a", "b"], start_s=10.0 * i)
        calls[1] = CallObservation("w", f"s{i}", None, calls[1].start_s, calls[1].end_s, output_tokens=5, call_id="x")
        feed(profiler, calls)
    snapshot = profiler.snapshot().workflows[0]
    assert ("a", UNKNOWN_AGENT, 1.0) in snapshot.edges
    assert profiler.predict("w", "s-new", agent=None).next_agent == "a"


def test_unknown_workflow_types_and_sessions_never_raise() -> None:
    profiler = _trained(sessions=3)
    assert profiler.predict("nope", "s").mode == "unknown"
    assert profiler.predict(None, None).mode == "unknown"
    unseen = profiler.predict("research", "never-seen")
    assert unseen.next_agent == "planner"  # a new session starts like the others
    profiler.observe(CallObservation(None, "s", "a", 0.0, 1.0))
    profiler.observe(CallObservation("w", None, "a", 0.0, 1.0))
    assert profiler.dropped_observations == 2
    profiler.end_session("research", "never-seen", 0.0)
    profiler.end_session(None, None, 0.0)


def test_workflow_types_are_capped() -> None:
    profiler = WorkflowProfiler(ProfilerConfig(max_workflows=3))
    for i in range(10):
        feed(profiler, session_calls(f"type{i}", "s", ["a", "b"]))
    assert len(profiler.snapshot().workflows) == 3
    assert profiler.mode("type9") == "unknown"


def test_late_observation_of_an_ended_session_is_dropped() -> None:
    profiler = _trained(sessions=2)
    late = session_calls("research", "s0", ["planner"], start_s=5.0)[0]
    profiler.observe(late)
    assert profiler.live_sessions == 0 and profiler.dropped_observations == 1


def test_many_distinct_sessions_keep_memory_bounded() -> None:
    config = ProfilerConfig(max_live_sessions=500, max_recently_ended=500)
    profiler = WorkflowProfiler(config)
    for i in range(20_000):  # abandoned sessions: never ended
        profiler.observe(CallObservation("chat", f"user-{i}", "assistant", float(i), i + 0.5, output_tokens=50, call_id="c"))
    for i in range(2_000):
        feed(profiler, session_calls("chat", f"done-{i}", ["assistant"], start_s=float(i)))
    assert profiler.live_sessions <= 500
    assert len(profiler._ended) <= 500
    assert profiler.evicted_sessions >= 19_500
    model = profiler.model("chat")
    assert len(model.automaton.table) < 10 and len(model.samples["assistant"]) <= config.max_samples_per_agent


def test_random_agent_names_stay_shadow_and_are_capped() -> None:
    config = ProfilerConfig(max_agents_per_workflow=50)
    profiler = WorkflowProfiler(config)
    rng = random.Random(9)
    for i in range(200):
        names = [f"agent-{rng.randrange(10**9)}" for _ in range(rng.randint(2, 6))]
        feed(profiler, session_calls("chaos", f"s{i}", names, start_s=10.0 * i, output_tokens=rng.randint(1, 4000)))
    assert profiler.mode("chaos") == "shadow"
    model = profiler.model("chaos")
    assert len(model.samples) <= 51
    assert OTHER_AGENT in model.samples


def test_live_state_after_out_of_order_arrivals_equals_the_in_order_state() -> None:
    from pythia_server.profiler.predictor import LiveSession

    calls = session_calls("research", "s", ["planner", ("searcher", 5), "writer", ("critic", 2), "writer"])
    reference = LiveSession("research", "s")
    for call in calls:
        reference.add(call, call.agent)
    for seed in range(25):
        shuffled = list(calls)
        random.Random(seed).shuffle(shuffled)
        live = LiveSession("research", "s")
        for call in shuffled:
            live.add(call, call.agent)
        assert live.steps == reference.steps
        assert (live.history, live.visits, live.last_end_s) == (reference.history, reference.visits, reference.last_end_s)
        assert live.last_prompt == reference.last_prompt
        assert live.last_prompt_by_agent == reference.last_prompt_by_agent


def test_predicting_never_changes_what_was_learned() -> None:
    profiler = _trained(sessions=5)
    before = profiler.snapshot()
    model = profiler.model("research")
    known = set(model.known_agents)
    for agent in ("stranger", "planner", None):
        profiler.predict("research", "s0", agent, 0.0)
        profiler.predict("research", "nobody", agent, 0.0)
    assert profiler.snapshot() == before and model.known_agents == known


def test_garbage_observations_never_raise_and_predictions_stay_well_formed() -> None:
    rng = random.Random(11)
    profiler = WorkflowProfiler(ProfilerConfig(max_live_sessions=20, max_calls_per_session=30))
    values = [None, "", "a", "b", "c", "x" * 200]
    for i in range(3000):
        start = rng.choice([0.0, -5.0, 1e9, rng.uniform(-10, 1000)])
        call = CallObservation(
            workflow=rng.choice([None, "", "w1", "w2"]),
            session=rng.choice([None, "", *[f"s{n}" for n in range(30)]]),
            agent=rng.choice(values),
            start_s=start,
            end_s=start + rng.uniform(-5, 50),  # sometimes ends before it starts
            prompt_tokens=rng.randint(-10, 10_000),
            output_tokens=rng.randint(-10, 10_000),
            parent=rng.choice([None, "a", "p"]),
            call_id=rng.choice(["", f"c{rng.randrange(50)}"]),
            block_hashes=tuple(rng.randrange(4) for _ in range(rng.randrange(6))),
        )
        profiler.observe(call)
        if rng.random() < 0.05:
            profiler.end_session(call.workflow, call.session, start)
        prediction = profiler.predict(call.workflow, call.session, rng.choice(values), start)
        assert prediction.mode in ("proactive", "shadow", "unknown")
        assert abs(sum(p for _, p in prediction.next_agents) - 1.0) < 1e-9 or len(prediction.next_agents) in (0, 8)
        assert prediction.output_bound_tokens is None or prediction.output_bound_tokens >= 0
    assert profiler.live_sessions <= 20
    profiler.snapshot()


def test_prompt_composition_and_delays_learn_from_a_sample_once_a_type_is_established() -> None:
    from pythia_server.profiler.predictor import SAMPLE_ALL_FIRST, SAMPLE_EVERY

    profiler = WorkflowProfiler()
    sessions = SAMPLE_ALL_FIRST + 4 * SAMPLE_EVERY
    for i in range(sessions):
        feed(profiler, session_calls("wf", f"s{i}", ["plan", "write", "review"], start_s=10.0 * i))
    model = profiler.model("wf")
    assert model is not None and model.sessions_learned == sessions
    sampled = SAMPLE_ALL_FIRST + 4  # every SAMPLE_EVERY-th of the later sessions
    assert model.composition.summary()["plan"]["calls"] == sampled
    assert len(model.delays_ms[("plan", "write")]) == sampled
    # while output bounds and the automaton still learn every session
    assert len(model.samples["plan"]) == sessions
    assert model.snapshot().mode.mode == "proactive"
    prediction = profiler.predict("wf", "new", agent="plan", now_s=0.0)
    assert prediction.prefix.kind == "role" and prediction.prefix.expected_hit_fraction > 0.5
