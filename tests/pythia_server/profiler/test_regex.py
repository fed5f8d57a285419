from pythia_server.profiler.regex import RegexSummary, compress
from pythia_server.profiler.steps import Step


def _steps(spec: list[tuple[str, int]]) -> list[Step]:
    return [Step(a, w, float(i), float(i) + 0.5, 10) for i, (a, w) in enumerate(spec)]


def test_compress_finds_repeated_cycles_and_fanout() -> None:
    steps = _steps([("P", 1), ("S", 3), ("W", 1), ("R", 1), ("W", 1), ("R", 1), ("E", 1)])
    assert compress(steps) == [(("P",), 1, 1), (("S",), 1, 3), (("W", "R"), 2, 1), (("E",), 1, 1)]


def test_render_merges_repeat_counts_into_bounded_ranges() -> None:
    summary = RegexSummary()
    for reps, width in ((1, 2), (3, 4), (2, 3)):
        summary.add(_steps([("plan", 1), ("search", width)] + [("write", 1), ("review", 1)] * reps + [("end", 1)]))
    assert summary.render(0.05) == "plan search[x2-4] (write review){1,3} end"
    assert summary.coverage(0.05) == 1.0


def test_rare_skeletons_are_pruned() -> None:
    summary = RegexSummary()
    for _ in range(99):
        summary.add(_steps([("a", 1), ("b", 1)]))
    summary.add(_steps([("a", 1), ("weird", 1)]))
    assert summary.render(0.05) == "a b"
    assert summary.coverage(0.05) == 0.99


def test_remembered_parses_give_the_summary_that_parsing_every_session_gives() -> None:
    # Repeated shapes take the remembered parse; new skeletons (and absorbed ones) must
    # invalidate it. A fresh summary per prefix of the stream has nothing remembered yet.
    import random

    rng = random.Random(5)
    stream = []
    for _ in range(120):
        shape = [("plan", 1), ("search", rng.choice((2, 3)))]
        shape += [("write", 1), ("review", 1)] * rng.choice((1, 1, 2, 3))
        if rng.random() < 0.1:
            shape.append(("fix", 1))
        stream.append(_steps(shape + [("end", 1)]))
    remembered = RegexSummary()
    for i, steps in enumerate(stream):
        remembered.add(steps)
        if i % 17 == 0 or i == len(stream) - 1:
            fresh = RegexSummary()
            for earlier in stream[: i + 1]:
                fresh._parses.clear()  # parse every session afresh
                fresh.add(earlier)
            assert remembered.render(0.01) == fresh.render(0.01)
            assert remembered.coverage(0.01) == fresh.coverage(0.01)
