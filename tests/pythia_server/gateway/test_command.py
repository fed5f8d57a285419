"""``pythia-server serve`` as a user runs it: simulated replicas spawned, SIGTERM stops all cleanly."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import openai
import pytest

from pythia_sdk.protocol import AgentTags, encode_headers
from pythia_server.cli import main


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pythia_server.cli", *argv], capture_output=True, text=True,
                          check=False, timeout=60)


def test_serve_sim_replicas_then_report_then_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "serve.db"
    process = subprocess.Popen(
        [sys.executable, "-m", "pythia_server.cli", "serve", "--backend", "sim", "--replicas", "2", "--port", "0",
         "--db", str(db), "--speedup", "50", "--log-dir", str(tmp_path / "logs")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        timer = threading.Timer(60, process.kill)
        timer.start()
        line = process.stdout.readline() if process.stdout else ""
        timer.cancel()
        match = re.search(r"serving on (http://\S+) with 2 simulated replica", line)
        assert match, f"no ready line: {line!r} {process.stderr.read() if process.poll() is not None else ''}"
        url = match.group(1).rstrip(";")

        for session in ("s1", "s2"):
            client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0,
                                   default_headers=encode_headers(AgentTags("research", session, "planner")))
            model = client.models.list().data[0].id
            reply = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Plan the work"}], max_tokens=8,
                extra_body={"ignore_eos": True})
            assert reply.usage is not None and reply.usage.completion_tokens == 8
            chunks = list(client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Plan more"}], max_tokens=8, stream=True,
                stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))
            assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8

        result = run_cli("report", "--url", url, "--json")
        assert result.returncode == 0, result.stderr
        (workflow,) = json.loads(result.stdout)["workflows"]
        assert (workflow["workflow"], workflow["sessions"], workflow["calls"]) == ("research", 2, 4)
        assert workflow["output_tokens"] == 32
        assert [a["agent"] for a in workflow["agents"]] == ["planner"]

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # The store was flushed: the file gives the same report; the tables render.
    result = run_cli("report", "--db", str(db), "--json")
    assert json.loads(result.stdout)["workflows"][0]["calls"] == 4
    table = run_cli("report", "--db", str(db))
    assert table.returncode == 0 and "Agents of research" in table.stdout and "planner" in table.stdout


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--db", str(tmp_path / "missing.db")]) == 2
    assert "no store at" in capsys.readouterr().err
    assert main(["report", "--url", "http://127.0.0.1:9"]) == 2
    assert "cannot reach" in capsys.readouterr().err
    assert main(["serve", "--router", "nope", "--db", str(tmp_path / "x.db")]) == 2
    assert "unknown router 'nope'" in capsys.readouterr().err
    assert main(["serve", "--backend-url", "not a url", "--db", str(tmp_path / "x.db")]) == 2
    assert "needs a host and a port" in capsys.readouterr().err
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    assert main(["serve", "--backend-url", "http://127.0.0.1:9", "--db", str(tmp_path / "junk.db")]) == 2
    assert "cannot open the store" in capsys.readouterr().err
