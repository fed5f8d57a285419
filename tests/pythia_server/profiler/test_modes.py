from pythia_server.profiler.modes import PROACTIVE, SHADOW, ModeTracker, SessionScore


def _tracker() -> ModeTracker:
    return ModeTracker(
        validation_sessions=10, min_validation_sessions=5, promote_top1=0.8, promote_coverage=0.85,
        drift_sessions=3, demote_top1=0.5, demote_coverage=0.7,
    )


GOOD = SessionScore(top1_hits=9, top1_trials=10, bound_covered=10, bound_trials=10)
BAD_ORDER = SessionScore(top1_hits=2, top1_trials=10, bound_covered=10, bound_trials=10)
BAD_BOUND = SessionScore(top1_hits=10, top1_trials=10, bound_covered=3, bound_trials=10)


def test_promoted_only_after_enough_accurate_sessions() -> None:
    tracker = _tracker()
    for _ in range(4):
        assert tracker.record(GOOD) == SHADOW
    assert tracker.record(GOOD) == PROACTIVE
    state = tracker.state()
    assert state.promotions == 1 and state.next_agent_top1 == 0.9 and state.bound_coverage == 1.0


def test_inaccurate_or_uncovered_sessions_stay_shadow() -> None:
    for bad in (BAD_ORDER, BAD_BOUND):
        tracker = _tracker()
        for _ in range(20):
            assert tracker.record(bad) == SHADOW
        assert "need" in tracker.state().reason


def test_no_bound_at_all_is_not_coverage() -> None:
    tracker = _tracker()
    for _ in range(10):
        tracker.record(SessionScore(10, 10, 0, 0))
    assert tracker.mode == SHADOW


def test_drift_demotes_and_the_type_must_requalify_on_new_sessions() -> None:
    tracker = _tracker()
    for _ in range(10):
        tracker.record(GOOD)
    assert tracker.mode == PROACTIVE
    assert tracker.record(BAD_ORDER) == PROACTIVE  # one bad session in the last 3 is not drift
    assert tracker.record(BAD_ORDER) == SHADOW  # last 3: (9 + 2 + 2) / 30 < 0.5
    state = tracker.state()
    assert state.demotions == 1 and state.sessions_judged == 0 and "drift" in state.reason
    for _ in range(4):
        assert tracker.record(GOOD) == SHADOW
    assert tracker.record(GOOD) == PROACTIVE
