"""The README's main job: serve a LangGraph multi-agent workflow through pythia-server.

Starts ``pythia-server serve`` on the simulated SGLang engine (two replicas), runs the
instrumented deep-research workflow of ``research_team.py`` a few dozen times through
it, prints the per-workflow report and stops the server cleanly. Nothing here needs a
GPU or the network.

    python examples/demo.py [--sessions 24] [--concurrency 6] [--out pythia-out]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import research_team  # noqa: E402  (the example workflow beside this file)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, server: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"pythia-server exited early with status {server.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"pythia-server did not become ready within {timeout_s:.0f} s")


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=24, help="workflow runs (default 24)")
    parser.add_argument("--concurrency", type=int, default=6, help="runs in flight at once (default 6)")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--speedup", type=float, default=10.0, help="simulated engine clock speed-up")
    parser.add_argument("--out", type=Path, default=Path("pythia-out"), help="where the database and report go")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    db = args.out / "pythia.db"
    html = args.out / "report.html"
    for stale in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        stale.unlink(missing_ok=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cli = [sys.executable, "-m", "pythia_server.cli"]
    serve = [
        *cli, "serve", "--backend", "sim", "--replicas", str(args.replicas),
        "--port", str(port), "--db", str(db), "--speedup", str(args.speedup),
    ]
    print("$ pythia-server " + " ".join(serve[3:]), flush=True)
    server = subprocess.Popen(serve, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        _wait_ready(url, server, timeout_s=90)
        started = time.monotonic()
        asyncio.run(research_team.run_sessions(url + "/v1", sessions=args.sessions, concurrency=args.concurrency))
        print(f"\n{args.sessions} deep_research sessions served in {time.monotonic() - started:.1f} s\n", flush=True)
        report = subprocess.run([*cli, "report", "--url", url, "--html", str(html)], check=False)
        if report.returncode != 0:
            return report.returncode
    finally:
        _stop(server)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
