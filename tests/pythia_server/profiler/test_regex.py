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
