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
