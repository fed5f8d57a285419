"""``pythia-server bench``: every baseline on tiny converted workloads, sweeps, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pythia_server.cli import main
from pythia_server.policy import POLICY_NAMES
from pythia_server.replay.bench import prepare_workload, workflow_graphs
from pythia_server.replay.converters.chatdev import convert_chatdev, read_chatdev
from pythia_server.replay.converters.mooncake import convert_mooncake
from pythia_server.replay.generators.deep_research import generate_deep_research
from pythia_server.replay.transforms import first_sessions
from pythia_server.replay.workload import save_workload

REQUIRED = ("policy", "sessions", "jct_mean_s", "jct_p95_s", "ideal_jct_mean_s", "throughput_tok_s",
            "cache_hit_rate", "preemptions")


@pytest.fixture(scope="module")
def tiny_workloads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three converted ChatDev runs, 40 Mooncake rows and four generated deep-research runs."""
    from tests.pythia_server.replay.conftest import SHARED_WORKLOADS

    if not SHARED_WORKLOADS.is_dir():
        pytest.skip(f"recorded workloads not found at {SHARED_WORKLOADS}")
    out = tmp_path_factory.mktemp("workloads")
    files = {
        "chatdev": first_sessions(convert_chatdev(read_chatdev(SHARED_WORKLOADS / "chatdev_calls.jsonl")), 3),
        "mooncake": convert_mooncake(SHARED_WORKLOADS / "mooncake_synthetic_trace.jsonl")[:40],
        "deep_research": generate_deep_research(4, seed=3),
    }
    paths = {}
    for name, requests in files.items():
        paths[name] = out / f"{name}.jsonl"
        save_workload(requests, paths[name])
    return paths


def _json_rows(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


@pytest.mark.parametrize("workload", ["chatdev", "mooncake", "deep_research"])
def test_bench_runs_every_baseline(workload: str, tiny_workloads: dict[str, Path],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "--workload", str(tiny_workloads[workload]), "--policy", ",".join(POLICY_NAMES),
                 "--replicas", "2", "--rate", "2", "--json"])
    assert code == 0
    rows = _json_rows(capsys)
    assert [r["policy"] for r in rows] == list(POLICY_NAMES)
    for row in rows:
        for key in REQUIRED:
            assert key in row, key
        assert row["jct_mean_s"] >= row["ideal_jct_mean_s"] > 0  # type: ignore[operator]
        assert 0.0 <= row["cache_hit_rate"] <= 1.0  # type: ignore[operator]
        assert row["throughput_tok_s"] > 0  # type: ignore[operator]


def test_bench_prints_a_table_by_default(tiny_workloads: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--workload", str(tiny_workloads["deep_research"]), "--policy", "sglang,sglang-router",
                 "--concurrency", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["policy", "sessions", "JCT", "mean"]
    assert lines[2].startswith("sglang ") and lines[3].startswith("sglang-router")


def test_sessions_replicates_a_small_file(tiny_workloads: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--workload", str(tiny_workloads["chatdev"]), "--policy", "sglang", "--sessions", "7",
                 "--rate", "1", "--json"]) == 0
    assert _json_rows(capsys)[0]["sessions"] == 7


def test_sweep_writes_a_plot_and_one_row_per_rate(tiny_workloads: dict[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    plot, out = tmp_path / "jct.svg", tmp_path / "rows.json"
    assert main(["bench", "--workload", str(tiny_workloads["deep_research"]), "--policy", "sglang,dynamo-kv",
                 "--sweep", "0.05,50", "--plot", str(plot), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "4/4" in captured.err  # the progress bar reached the end
    svg = plot.read_text()
    assert svg.startswith("<svg") and svg.count("<polyline") == 3  # two policies and the ideal
    rows = json.loads(out.read_text())
    assert sorted((r["rate_per_s"], r["policy"]) for r in rows) == [
        (0.05, "dynamo-kv"), (0.05, "sglang"), (50.0, "dynamo-kv"), (50.0, "sglang")]
    by_rate = {r["rate_per_s"]: r for r in rows if r["policy"] == "sglang"}
    assert by_rate[50.0]["jct_mean_s"] > by_rate[0.05]["jct_mean_s"]  # more load, no faster


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--policy", "nope"], "unknown policy 'nope'"),
        (["--policy", "sglang", "--replicas", "0"], "--replicas must be positive"),
        (["--policy", "sglang", "--rate", "-1"], "--rate must be positive"),
        (["--policy", "sglang", "--concurrency", "0"], "--concurrency must be positive"),
        (["--policy", "sglang", "--sessions", "0"], "--sessions must be positive"),
        (["--policy", "sglang", "--plot", "x.svg"], "--plot goes with --sweep"),
        (["--policy", "sglang", "--sweep", "1,2", "--plot", "x.png"], "ending in .svg"),
        (["--policy", "sglang", "--sweep", "1,fast"], "comma-separated numbers"),
        (["--policy", ","], "at least one name"),
    ],
)
def test_bad_input_is_a_one_line_error(argv: list[str], message: str, tiny_workloads: dict[str, Path],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--workload", str(tiny_workloads["chatdev"]), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_missing_or_broken_workload_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--workload", str(tmp_path / "none.jsonl"), "--policy", "sglang"]) == 2
    assert "no workload file" in capsys.readouterr().err
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"request_id": "a", "input_length": "many"}\n')
    assert main(["bench", "--workload", str(broken), "--policy", "sglang"]) == 2
    err = capsys.readouterr().err
    assert "broken.jsonl" in err and "Traceback" not in err


def test_rate_and_concurrency_exclude_each_other(tiny_workloads: dict[str, Path]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--workload", str(tiny_workloads["chatdev"]), "--policy", "sglang", "--rate", "1",
              "--concurrency", "2"])


def test_prepare_workload_and_graphs(tiny_workloads: dict[str, Path]) -> None:
    requests = prepare_workload(str(tiny_workloads["deep_research"]), sessions=2, rate=1.0)
    assert len({r.session_id for r in requests}) == 2
    graphs = {g.workflow: g for g in workflow_graphs(requests)}
    assert graphs  # the generator's planner -> searchers -> aggregator edges
    graph = next(iter(graphs.values()))
    assert any(graph.successors.values())
