"""`pythia-server serve --backend sglang`: dry run, bad options, an SGLang that cannot run."""

from __future__ import annotations

import json
import shlex

import pytest

from pythia_server.cli import main


def test_dry_run_prints_one_command_per_replica_with_the_policy_flags(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    argv = [
        "serve",
        "--backend",
        "sglang",
        "--model-path",
        "M",
        "--replicas",
        "4",
        "--dry-run",
        "--sglang-python",
        "/opt/sglang/bin/python",
        "--sglang-arg=--mem-fraction-static=0.85",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    commands = [shlex.split(line) for line in out if not line.startswith("#")]
    assert [c[0] for c in commands] == [f"CUDA_VISIBLE_DEVICES={i}" for i in range(4)]
    for i, words in enumerate(commands):
        assert words[1:6] == ["/opt/sglang/bin/python", "-m", "sglang.launch_server", "--model-path", "M"]
        assert words[words.index("--port") + 1] == str(30000 + i)
        assert {
            "--enable-metrics",
            "--enable-cache-report",
            "--enable-priority-scheduling",
            "--enable-session-radix-cache",
        } <= set(words)
        assert words[words.index("--schedule-policy") + 1] == "fcfs"
        assert words[words.index("--radix-eviction-policy") + 1] == "priority"
        assert json.loads(words[words.index("--kv-events-config") + 1])["publisher"] == "zmq"
        assert words[-1] == "--mem-fraction-static=0.85"


def test_dry_run_with_tensor_parallel(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    assert main(["serve", "--backend", "sglang", "--model-path", "M", "--replicas", "2", "--tp", "2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "CUDA_VISIBLE_DEVICES=0,1 " in out and "CUDA_VISIBLE_DEVICES=2,3 " in out and "--tp-size 2" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "needs --model-path"),
        (["--model-path", "M", "--replicas", "3", "--tp", "2"], "need 6 GPUs"),
    ],
)
def test_bad_sglang_options_are_one_line_errors(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    assert main(["serve", "--backend", "sglang", "--dry-run", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_sglang_that_cannot_run_stops_before_anything_starts(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "serve",
        "--backend",
        "sglang",
        "--model-path",
        "M",
        "--sglang-python",
        "/no/such/python",
        "--db",
        f"{tmp_path}/p.db",
        "--port",
        "0",
    ]
    assert main(argv) == 2
    assert "cannot run SGLang with /no/such/python" in capsys.readouterr().err


def test_sim_dry_run_prints_the_sim_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--replicas", "2", "--dry-run", "--speedup", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all("-m pythia_server.cli sim --host 127.0.0.1 --port" in line for line in lines)
