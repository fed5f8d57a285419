from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from pythia_server.cli import CliError
from pythia_server.replay import command
from pythia_server.replay.workload import load_workload, session_keys


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pythia-server")
    command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def _chatdev_file(path: Path) -> Path:
    rows = []
    for run, t0 in (("A", 1000.0), ("B", 9000.0)):
        for seq in range(3):
            rows.append(
                {
                    "workflow": run,
                    "seq": seq,
                    "t_send": t0 + 10 * seq,
                    "t_send_exact": True,
                    "t_recv": t0 + 10 * seq + 5,
                    "prompt_tokens": 300 + 100 * seq,
                    "completion_tokens": 40,
                    "phase": "Coding",
                    "agent": "Programmer",
                    "assistant_role": "Programmer",
                    "user_role": "CTO",
                    "a_prompt_id": "p",
                    "u_prompt_id": "c",
                }
            )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_convert_keeps_recorded_arrivals_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.jsonl"
    assert (
        _run(
            [
                "workload",
                "convert",
                "--from",
                "chatdev",
                str(_chatdev_file(tmp_path / "c.jsonl")),
                str(out),
            ]
        )
        == 0
    )
    requests = load_workload(out)
    assert [r.timestamp_ms for r in requests if r.is_root] == [0.0, 8_000_000.0]
    assert "wrote 6 requests in 2 sessions" in capsys.readouterr().out


def test_convert_with_a_rate_retimes_sessions(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    _run(
        [
            "workload",
            "convert",
            "--from",
            "chatdev",
            str(_chatdev_file(tmp_path / "c.jsonl")),
            str(out),
            "--rate",
            "2",
            "--seed",
            "1",
            "--sessions",
            "2",
        ]
    )
    roots = [r.timestamp_ms for r in load_workload(out) if r.is_root]
    assert roots[0] == 0.0 and 0 < roots[1] < 60_000


def test_generate_then_stats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "dr.jsonl"
    _run(
        [
            "workload",
            "generate",
            "deep-research",
            str(out),
            "--sessions",
            "5",
            "--seed",
            "2",
            "--arrival",
            "bursty",
        ]
    )
    assert len(session_keys(load_workload(out))) == 5
    capsys.readouterr()
    _run(["workload", "stats", str(out)])
    table = capsys.readouterr().out
    assert "deep_research" in table and "fanout" in table
    _run(["workload", "stats", str(out), "--json"])
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["sessions"] == 5 and row["workflow_type"] == "deep_research"


def test_generate_is_reproducible(tmp_path: Path) -> None:
    for name in ("a", "b"):
        _run(
            [
                "workload",
                "generate",
                "writer-reviewer",
                str(tmp_path / f"{name}.jsonl"),
                "--sessions",
                "3",
                "--seed",
                "4",
            ]
        )
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()


def test_errors_are_one_line_cli_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"request_id": "a", "input_length": 1, "output_length": 1, "hash_ids": [1], "wait_for": ["q"]}\n'
    )
    with pytest.raises(CliError, match="bad.jsonl:1: waits for unknown request_id 'q'"):
        _run(["workload", "stats", str(bad)])
    with pytest.raises(CliError, match="absent.jsonl"):
        _run(
            [
                "workload",
                "convert",
                "--from",
                "claude-code",
                str(tmp_path / "absent.jsonl"),
                str(tmp_path / "o"),
            ]
        )
    with pytest.raises(CliError, match="--rate must be positive"):
        _run(
            ["workload", "generate", "coding-agent", str(tmp_path / "o"), "--rate", "0"]
        )


def test_registered_in_the_pythia_server_entry_point(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pythia_server.cli import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    assert main(["workload", "stats", str(bad)]) == 2
    assert "pythia-server workload: error:" in capsys.readouterr().err


def test_convert_copies_scale_up_sessions(tmp_path: Path) -> None:
    out = tmp_path / "many.jsonl"
    source = str(_chatdev_file(tmp_path / "c.jsonl"))
    _run(
        [
            "workload",
            "convert",
            "--from",
            "chatdev",
            source,
            str(out),
            "--copies",
            "5",
            "--rate",
            "1",
        ]
    )
    requests = load_workload(out)
    assert len(session_keys(requests)) == 10 and len(requests) == 30
