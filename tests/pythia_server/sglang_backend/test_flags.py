"""Launch plans and graceful degradation when the installed SGLang lacks a flag (no sglang needed)."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

import pytest

from pythia_server.sglang_backend.flags import (
    SGLangLaunchConfig,
    build_launch_plan,
    describe_launch,
    kv_events_config_json,
    launch_config_from_args,
    plan_from_args,
    sglang_replica_specs,
)


def test_four_replicas_one_gpu_each_with_every_policy_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    args = argparse.Namespace(
        model_path="meta-llama/Llama-3.1-8B-Instruct", replicas=4, tp=1, sglang_python="/opt/sgl/bin/python"
    )
    lines = describe_launch(args)
    commands = [line for line in lines if not line.startswith("#")]
    assert len(commands) == 4
    for i, line in enumerate(commands):
        words = shlex.split(line)
        assert words[0] == f"CUDA_VISIBLE_DEVICES={i}"
        assert words[1:4] == ["/opt/sgl/bin/python", "-m", "sglang.launch_server"]
        assert words[words.index("--port") + 1] == str(30000 + i)
        for flag in (
            "--enable-metrics",
            "--enable-cache-report",
            "--enable-priority-scheduling",
            "--enable-session-radix-cache",
        ):
            assert flag in words
        assert words[words.index("--schedule-policy") + 1] == "fcfs"
        assert words[words.index("--radix-eviction-policy") + 1] == "priority"
        kv = json.loads(words[words.index("--kv-events-config") + 1])
        assert kv == {
            "publisher": "zmq",
            "endpoint": f"tcp://127.0.0.1:{5557 + 2 * i}",
            "replay_endpoint": f"tcp://127.0.0.1:{5558 + 2 * i}",
            "topic": "",
            "bind": True,
        }
    assert any(line.startswith("# KV events") for line in lines)
    assert any("not checked" in line for line in lines)


def test_tensor_parallel_groups_split_the_visible_gpus() -> None:
    plan = build_launch_plan(SGLangLaunchConfig("m", replicas=2, tp=2, gpus=("4", "5", "6", "7")))
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in plan.specs] == ["4,5", "6,7"]
    assert all("--tp-size" in s.argv and s.argv[s.argv.index("--tp-size") + 1] == "2" for s in plan.specs)


def test_cuda_visible_devices_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    config = launch_config_from_args(argparse.Namespace(model_path="m", replicas=2, tp=1))
    assert config.gpus == ("2", "3")
    with pytest.raises(ValueError, match="need 4 GPUs, only 2 visible"):
        launch_config_from_args(argparse.Namespace(model_path="m", replicas=2, tp=2))


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"model_path": ""}, "--model-path"), ({"replicas": 0}, "must be >= 1"), ({"page_size": 0}, "page_size")],
)
def test_bad_config_is_refused(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SGLangLaunchConfig(**{"model_path": "m", **changes})


def test_flags_the_installed_sglang_lacks_are_dropped_and_reported() -> None:
    old = frozenset(
        {
            "--model-path",
            "--host",
            "--port",
            "--tp-size",
            "--enable-metrics",
            "--enable-cache-report",
            "--schedule-policy",
            "--page-size",
            "--kv-events-config",
        }
    )
    plan = build_launch_plan(SGLangLaunchConfig("m", supported_flags=old))
    argv = plan.specs[0].argv
    assert "--enable-priority-scheduling" not in argv and "--radix-eviction-policy" not in argv
    assert "--enable-session-radix-cache" not in argv
    assert argv[argv.index("--schedule-policy") + 1] == "fcfs"  # still right without priority
    lost = {f.name for f in plan.degraded}
    assert lost == {
        "priority_scheduling",
        "priority_default",
        "priority_retraction",
        "priority_eviction",
        "session_radix_cache",
    }
    assert all("not in this SGLang's --help" in f.reason for f in plan.degraded)
    assert plan.kv_event_endpoints  # kv events kept

    lines = describe_launch(argparse.Namespace(model_path="m"))  # unchecked: nothing degraded
    assert not any(line.startswith("# degraded") for line in lines)


def test_kv_events_off_and_public_host() -> None:
    plan = build_launch_plan(SGLangLaunchConfig("m", kv_events=False, session_radix_cache=False, host="0.0.0.0"))
    assert "--kv-events-config" not in plan.specs[0].argv and plan.kv_event_endpoints == ()
    assert json.loads(kv_events_config_json("0.0.0.0", 1, 2)) == {
        "publisher": "zmq",
        "endpoint": "tcp://*:1",
        "replay_endpoint": "tcp://*:2",
        "topic": "",
    }
    assert plan.specs[0].url == "http://127.0.0.1:30000"


def test_sglang_replica_specs_shortcut(tmp_path: Path) -> None:
    specs = sglang_replica_specs(
        "m",
        2,
        python="/venv/bin/python",
        base_port=31000,
        log_dir=tmp_path,
        extra_args=["--mem-fraction-static", "0.8"],
    )
    assert [s.replica_id for s in specs] == ["sglang-0", "sglang-1"]
    assert [s.port for s in specs] == [31000, 31001]
    assert specs[1].argv[-2:] == ("--mem-fraction-static", "0.8")
    assert specs[0].log_path == tmp_path / "sglang-0.log"


FAKE_SGLANG_PYTHON = """#!/bin/sh
# Stands in for an older SGLang venv's python: a version and a --help without the newer flags.
if [ "$1" = "-c" ]; then echo "0.4.9"; exit 0; fi
if [ "$1" = "-m" ] && [ "$2" = "sglang.launch_server" ]; then
    echo "usage: launch_server [--model-path MODEL_PATH] [--host HOST] [--port PORT] [--tp-size TP_SIZE]"
    echo "  --enable-metrics  --enable-cache-report  --schedule-policy {lpm,fcfs}  --page-size PAGE_SIZE"
    echo "  --kv-events-config KV_EVENTS_CONFIG"
    exit 0
fi
exit 1
"""


def test_plan_from_args_probes_the_install_and_logs_what_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    python = tmp_path / "python"
    python.write_text(FAKE_SGLANG_PYTHON)
    python.chmod(0o755)
    args = argparse.Namespace(model_path="m", replicas=2, tp=1, sglang_python=str(python))
    with caplog.at_level("WARNING", logger="pythia_server.sglang_backend.flags"):
        plan = plan_from_args(args, log_dir=tmp_path / "logs")
    assert {f.name for f in plan.degraded} == {
        "priority_scheduling",
        "priority_default",
        "priority_retraction",
        "priority_eviction",
        "session_radix_cache",
    }
    assert "SGLang 0.4.9: priority_scheduling off" in caplog.text
    assert plan.specs[0].argv[0] == str(python) and "--enable-priority-scheduling" not in plan.specs[0].argv
    assert plan.specs[1].log_path == tmp_path / "logs" / "sglang-1.log"


def test_plan_from_args_without_sglang_is_a_clear_error(tmp_path: Path) -> None:
    args = argparse.Namespace(model_path="m", sglang_python=str(tmp_path / "missing-python"))
    with pytest.raises(ValueError, match="cannot run SGLang with .*missing-python.*docs/gpu.md"):
        plan_from_args(args)


def test_the_policy_running_cap_becomes_max_running_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    from pythia_server.policy import make_policy

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    cap = make_policy("pythia").engine.max_running_requests
    assert cap is not None

    def words(**kw: object) -> list[str]:
        line = next(x for x in describe_launch(argparse.Namespace(model_path="m", **kw)) if not x.startswith("#"))
        return shlex.split(line)

    assert words(policy="pythia")[words(policy="pythia").index("--max-running-requests") + 1] == str(cap)
    explicit = words(policy="pythia", max_running_requests=12)
    assert explicit[explicit.index("--max-running-requests") + 1] == "12"
    assert "--max-running-requests" not in words(policy="sglang-router")  # no cap: SGLang derives its own
    assert "--max-running-requests" not in words()
    assert "--enable-mixed-chunk" in words(policy="pythia")
    assert "--enable-mixed-chunk" not in words(policy="sglang-router") + words(policy="pythia-no-mixed")
