from pythia_server.profiler.composition import PrefixComposition, common_prefix_length

ROLE = (11, 12, 13, 14)


def test_common_prefix_length_of_chained_hashes() -> None:
    assert common_prefix_length((1, 2, 3), (1, 2, 4)) == 2
    assert common_prefix_length((1, 2, 3), (1, 2, 3, 4)) == 3
    assert common_prefix_length((), (1,)) == 0
    assert common_prefix_length((5, 6), (7, 6)) == 0
    long_a = tuple(range(1000))
    assert common_prefix_length(long_a, long_a[:731] + (-1,)) == 731


def _session(comp: PrefixComposition, session: int, calls: int) -> None:
    """One agent whose prompt is ROLE + its growing conversation."""
    history: tuple[int, ...] = ()
    previous = None
    for turn in range(calls):
        history += (1000 * session + turn,)
        prompt = ROLE + history
        comp.observe("coder", prompt, previous, previous, previous is None)
        previous = prompt


def test_role_prefix_is_learned_across_sessions_and_predicted_for_a_new_session() -> None:
    comp = PrefixComposition(max_agents=8, max_prefix_blocks=4096)
    _session(comp, 1, 3)
    assert comp.predict("coder", None, None, 64).kind == "none"  # one session proves nothing
    _session(comp, 2, 3)
    prediction = comp.predict("coder", None, None, 64)
    assert prediction.kind == "role"
    assert prediction.block_hashes == ROLE and prediction.tokens == 4 * 64


def test_inside_a_session_the_growing_history_is_the_better_prefix() -> None:
    comp = PrefixComposition(max_agents=8, max_prefix_blocks=4096)
    for session in range(5):
        _session(comp, session, 6)
    previous = ROLE + (77, 78, 79)
    prediction = comp.predict("coder", previous, previous, 64)
    assert prediction.kind == "history"
    assert prediction.block_hashes == previous and prediction.tokens == 7 * 64
    assert prediction.expected_hit_fraction > 0.5
    summary = comp.summary()["coder"]
    assert summary["role_prefix_blocks"] == 4 and summary["history_hit"] > summary["role_hit"]


def test_agents_are_capped() -> None:
    comp = PrefixComposition(max_agents=2, max_prefix_blocks=16)
    for i in range(10):
        comp.observe(f"a{i}", (i, i + 1), None, None, True)
    assert len(comp.summary()) == 2


def test_a_whole_session_at_once_learns_what_one_call_at_a_time_learns() -> None:
    import random

    rng = random.Random(9)
    per_call, per_session = PrefixComposition(8, 4096), PrefixComposition(8, 4096)
    for session in range(30):
        prompts = []
        history: dict[str, tuple[int, ...]] = {}
        for turn in range(rng.randint(1, 8)):
            agent = rng.choice(("coder", "reviewer", "tester"))
            grown = history.get(agent, (hash(agent) & 0xFFFF, 2, 3)) + (session * 100 + turn,)
            # sometimes a fresh chat: only the role blocks are shared with the last prompt
            history[agent] = grown if rng.random() < 0.7 else grown[:3] + (-turn - 1,)
            prompts.append((agent, history[agent]))
        last_by_agent: dict[str, tuple[int, ...]] = {}
        last_any = None
        for agent, hashes in prompts:
            previous = last_by_agent.get(agent)
            per_call.observe(agent, hashes, previous, last_any, previous is None)
            last_by_agent[agent] = last_any = hashes
        per_session.observe_session(prompts)
    assert per_session.summary() == per_call.summary()
    for agent in ("coder", "reviewer", "tester"):
        assert per_session.predict(agent, None, None, 64) == per_call.predict(agent, None, None, 64)
