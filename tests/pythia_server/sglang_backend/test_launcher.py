"""ReplicaSupervisor against real subprocesses: a tiny HTTP server that can crash, hang or refuse."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from pythia_server.sglang_backend.launcher import (
    ReplicaEvent,
    ReplicaSpec,
    ReplicaStartError,
    ReplicaState,
    ReplicaSupervisor,
    SupervisorConfig,
    attached_replica_specs,
    backoff_delay_s,
    free_ports,
    sim_replica_specs,
)
from pythia_server.sglang_backend.probe import HttpProbe

FAKE_SERVER = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    port, mode = int(sys.argv[1]), sys.argv[2]
    if mode == "fail":
        print("error: unrecognized arguments: --bad-flag", flush=True)
        sys.exit(7)
    if mode == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    state = {"hung": False, "ready_polls": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path == "/crash":
                os._exit(3)
            if self.path == "/hang":
                state["hung"] = True
            if self.path == "/health" and state["hung"]:
                time.sleep(30)
            code = 200
            if self.path == "/ready":
                state["ready_polls"] += 1
                code = 503 if mode == "slow-ready" and state["ready_polls"] < 4 else 200
                code = 404 if mode == "no-ready" else code
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

    print(f"serving on {port} pid {os.getpid()}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
    """
)

FAST = SupervisorConfig(
    ready_timeout_s=20.0,
    startup_probe_interval_s=0.05,
    health_interval_s=0.1,
    unhealthy_after_failures=2,
    restart_unhealthy_after_s=0.5,
    backoff_initial_s=0.05,
    backoff_max_s=0.2,
    stop_grace_s=5.0,
)


@pytest.fixture
def fake_server(tmp_path: Path) -> Path:
    path = tmp_path / "fake_server.py"
    path.write_text(FAKE_SERVER)
    return path


def make_spec(script: Path, tmp_path: Path, replica_id: str, mode: str = "ok") -> ReplicaSpec:
    port = free_ports(1)[0]
    return ReplicaSpec(
        replica_id=replica_id,
        argv=(sys.executable, str(script), str(port), mode),
        env={"PYTHIA_TEST_REPLICA": replica_id},
        port=port,
        log_path=tmp_path / "logs" / f"{replica_id}.log",
    )


async def wait_for(predicate: Callable[[], bool], bound_s: float = 20.0) -> None:
    """Poll until true; the bound only keeps a broken build from hanging the suite."""
    for _ in range(int(bound_s / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never became true")


async def get(url: str, timeout_s: float = 2.0) -> int | None:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as s:
            async with s.get(url) as r:
                return r.status
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return None


def pid_alive(pid: int) -> bool:
    """Running (a zombie waiting for whoever adopted it to reap it counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


async def test_start_reports_ready_and_stop_ends_processes(fake_server: Path, tmp_path: Path) -> None:
    events: list[ReplicaEvent] = []
    specs = [make_spec(fake_server, tmp_path, f"r{i}") for i in range(2)]
    sup = ReplicaSupervisor(specs, config=FAST, on_state_change=events.append, probe=HttpProbe(timeout_s=1))
    await sup.start()
    try:
        assert sup.urls(ready_only=True) == [s.url for s in specs]
        assert all(st.state is ReplicaState.READY for st in sup.status())
        pids = [st.pid for st in sup.status()]
        assert all(pid is not None and pid_alive(pid) for pid in pids)
        assert [(e.replica_id, e.state) for e in events if e.replica_id == "r0"] == [
            ("r0", ReplicaState.STARTING),
            ("r0", ReplicaState.READY),
        ]
        log_text = (tmp_path / "logs" / "r1.log").read_text()
        assert "=== pythia: start #1" in log_text and f"serving on {specs[1].port}" in log_text
    finally:
        await sup.stop()
    assert all(st.state is ReplicaState.STOPPED for st in sup.status())
    assert not any(pid_alive(pid) for pid in pids if pid)
    assert await get(specs[0].url + "/health") is None


async def test_dead_replica_is_restarted_with_backoff(fake_server: Path, tmp_path: Path) -> None:
    events: list[ReplicaEvent] = []
    spec = make_spec(fake_server, tmp_path, "r0")
    sup = ReplicaSupervisor([spec], config=FAST, on_state_change=events.append, probe=HttpProbe(timeout_s=1))
    await sup.start()
    try:
        first_pid = sup.status()[0].pid
        await get(spec.url + "/crash")
        await wait_for(lambda: sup.status()[0].restarts == 1 and sup.status()[0].state is ReplicaState.READY)
        status = sup.status()[0]
        assert status.pid != first_pid and status.last_exit_code == 3
        states = [e.state for e in events]
        assert states == [
            ReplicaState.STARTING,
            ReplicaState.READY,
            ReplicaState.BACKOFF,
            ReplicaState.STARTING,
            ReplicaState.READY,
        ]
        assert "exited with code 3" in events[2].reason
        assert await get(spec.url + "/health") == 200
        assert "=== pythia: start #2" in spec.log_path.read_text()  # type: ignore[union-attr]
    finally:
        await sup.stop()


async def test_max_restarts_gives_up(fake_server: Path, tmp_path: Path) -> None:
    spec = make_spec(fake_server, tmp_path, "r0")
    config = replace(FAST, max_restarts=0)
    sup = ReplicaSupervisor([spec], config=config, probe=HttpProbe(timeout_s=1))
    await sup.start()
    try:
        await get(spec.url + "/crash")
        await wait_for(lambda: sup.status()[0].state is ReplicaState.FAILED)
        assert "gave up" in sup.status()[0].reason
        assert sup.urls(ready_only=True) == []
    finally:
        await sup.stop()


async def test_first_launch_failure_raises_with_log_tail(fake_server: Path, tmp_path: Path) -> None:
    good = make_spec(fake_server, tmp_path, "good")
    bad = make_spec(fake_server, tmp_path, "bad", mode="fail")
    sup = ReplicaSupervisor([good, bad], config=FAST, probe=HttpProbe(timeout_s=1))
    with pytest.raises(ReplicaStartError, match=r"bad .*exited with code 7.*--bad-flag"):
        await sup.start()
    assert all(st.state is ReplicaState.STOPPED for st in sup.status())
    assert await get(good.url + "/health") is None  # the good one was stopped too
    await sup.stop()


async def test_missing_executable_is_a_start_error(tmp_path: Path) -> None:
    spec = ReplicaSpec("r0", argv=(str(tmp_path / "no-such-python"),), port=free_ports(1)[0])
    sup = ReplicaSupervisor([spec], config=FAST, probe=HttpProbe(timeout_s=1))
    with pytest.raises(ReplicaStartError, match="cannot start"):
        await sup.start()
    await sup.stop()


async def test_sigterm_ignored_escalates_to_sigkill(fake_server: Path, tmp_path: Path) -> None:
    spec = make_spec(fake_server, tmp_path, "stubborn", mode="ignore-term")
    sup = ReplicaSupervisor([spec], config=replace(FAST, stop_grace_s=0.3), probe=HttpProbe(timeout_s=1))
    await sup.start()
    pid = sup.status()[0].pid
    await sup.stop()
    assert pid is not None and not pid_alive(pid)
    assert sup.status()[0].last_exit_code == -signal.SIGKILL


async def test_hung_replica_goes_unhealthy_then_is_restarted(fake_server: Path, tmp_path: Path) -> None:
    events: list[ReplicaEvent] = []
    spec = make_spec(fake_server, tmp_path, "r0")
    sup = ReplicaSupervisor([spec], config=FAST, on_state_change=events.append, probe=HttpProbe(timeout_s=0.2))
    await sup.start()
    try:
        await get(spec.url + "/hang", timeout_s=1)
        await wait_for(lambda: sup.status()[0].restarts == 1 and sup.status()[0].state is ReplicaState.READY)
        states = [e.state for e in events]
        assert states[:4] == [ReplicaState.STARTING, ReplicaState.READY, ReplicaState.UNHEALTHY, ReplicaState.BACKOFF]
        assert "unhealthy for" in events[3].reason
    finally:
        await sup.stop()


async def test_readiness_waits_for_ready_endpoint(fake_server: Path, tmp_path: Path) -> None:
    slow = make_spec(fake_server, tmp_path, "slow", mode="slow-ready")
    none = make_spec(fake_server, tmp_path, "none", mode="no-ready")
    async with ReplicaSupervisor([slow, none], config=FAST, probe=HttpProbe(timeout_s=1)) as sup:
        assert sup.urls(ready_only=True) == [slow.url, none.url]
    # slow-ready answered /ready 503 three times before 200: start() waited through them.


async def test_drain_waits_for_idle_then_forgets(fake_server: Path, tmp_path: Path) -> None:
    events: list[ReplicaEvent] = []
    specs = [make_spec(fake_server, tmp_path, f"r{i}") for i in range(2)]
    sup = ReplicaSupervisor(specs, config=FAST, on_state_change=events.append, probe=HttpProbe(timeout_s=1))
    await sup.start()
    try:
        idle = asyncio.Event()
        drain = asyncio.create_task(sup.drain("r1", until_idle=idle.wait, timeout_s=30))
        await wait_for(lambda: any(e.state is ReplicaState.DRAINING for e in events))
        assert sup.urls() == [specs[0].url]  # no new work goes to a draining replica
        assert await get(specs[1].url + "/health") == 200  # but it still serves in-flight work
        idle.set()
        await drain
        assert [st.replica_id for st in sup.status()] == ["r0"]
        assert await get(specs[1].url + "/health") is None
        assert events[-1].replica_id == "r1" and events[-1].state is ReplicaState.STOPPED
    finally:
        await sup.stop()


async def test_add_scales_up(fake_server: Path, tmp_path: Path) -> None:
    async with ReplicaSupervisor([make_spec(fake_server, tmp_path, "r0")], config=FAST, probe=HttpProbe(1)) as sup:
        extra = make_spec(fake_server, tmp_path, "r1")
        await sup.add(extra)
        assert sup.urls(ready_only=True)[-1] == extra.url
        with pytest.raises(ValueError, match="duplicate"):
            await sup.add(extra)
        with pytest.raises(ReplicaStartError):
            await sup.add(make_spec(fake_server, tmp_path, "r2", mode="fail"))
        assert [s.replica_id for s in sup.specs] == ["r0", "r1"]


async def test_attached_replica_is_probed_never_signalled(fake_server: Path, tmp_path: Path) -> None:
    port = free_ports(1)[0]
    proc = subprocess.Popen([sys.executable, str(fake_server), str(port), "ok"], stdout=subprocess.DEVNULL)
    try:
        (spec,) = attached_replica_specs([f"http://127.0.0.1:{port}"])
        async with ReplicaSupervisor([spec], config=FAST, probe=HttpProbe(1)) as sup:
            assert sup.urls(ready_only=True) == [f"http://127.0.0.1:{port}"]
        assert proc.poll() is None  # stop() left it running
    finally:
        proc.terminate()
        proc.wait()


def test_backoff_grows_exponentially_to_a_cap() -> None:
    config = SupervisorConfig(backoff_initial_s=1.0, backoff_factor=2.0, backoff_max_s=10.0)
    assert [backoff_delay_s(config, n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_sim_replica_specs_build_the_sim_command(tmp_path: Path) -> None:
    specs = sim_replica_specs(2, "127.0.0.1", [8101, 8102], ["--speedup", "10"], tmp_path)
    assert specs[1].argv == (
        sys.executable,
        "-m",
        "pythia_server.cli",
        "sim",
        "--host",
        "127.0.0.1",
        "--port",
        "8102",
        "--speedup",
        "10",
    )
    assert [s.url for s in specs] == ["http://127.0.0.1:8101", "http://127.0.0.1:8102"]
    assert specs[0].log_path == tmp_path / "sim-0.log" and specs[0].replica_id == "sim-0"
    assert len({s.port for s in sim_replica_specs(3)}) == 3
    with pytest.raises(ValueError, match="3 replicas need 3 ports"):
        sim_replica_specs(3, ports=[1, 2])


def test_spec_validation_and_urls() -> None:
    with pytest.raises(ValueError, match="out of range"):
        ReplicaSpec("r", argv=("x",), port=0)
    assert ReplicaSpec("r", argv=("x",), host="0.0.0.0", port=5).url == "http://127.0.0.1:5"
    assert ReplicaSpec("r", argv=("x",), host="::1", port=5).url == "http://[::1]:5"
    assert attached_replica_specs(["localhost:30000"])[0].url == "http://localhost:30000"
    with pytest.raises(ValueError, match="needs a host and a port"):
        attached_replica_specs(["http://example"])


async def test_replicas_die_with_a_killed_gateway(fake_server: Path, tmp_path: Path) -> None:
    """SIGKILL leaves no chance to stop them: PR_SET_PDEATHSIG does it (Linux)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux-only")
    spec = make_spec(fake_server, tmp_path, "orphan")
    driver = tmp_path / "gateway.py"
    driver.write_text(
        textwrap.dedent(
            f"""
            import asyncio, sys
            from pathlib import Path
            from pythia_server.sglang_backend.launcher import ReplicaSpec, ReplicaSupervisor, SupervisorConfig

            async def main():
                spec = ReplicaSpec("orphan", argv={spec.argv!r}, port={spec.port})
                sup = ReplicaSupervisor([spec], config=SupervisorConfig(startup_probe_interval_s=0.05))
                await sup.start()
                print(sup.status()[0].pid, flush=True)
                await asyncio.sleep(600)

            asyncio.run(main())
            """
        )
    )
    gateway = await asyncio.create_subprocess_exec(sys.executable, str(driver), stdout=asyncio.subprocess.PIPE)
    assert gateway.stdout is not None
    child_pid = int(await asyncio.wait_for(gateway.stdout.readline(), 60))
    assert pid_alive(child_pid)
    gateway.kill()
    await gateway.wait()
    await wait_for(lambda: not pid_alive(child_pid))


async def test_restart_on_request_comes_back_through_readiness(fake_server: Path, tmp_path: Path) -> None:
    events: list[ReplicaEvent] = []
    spec = make_spec(fake_server, tmp_path, "r0")
    async with ReplicaSupervisor([spec], config=FAST, on_state_change=events.append, probe=HttpProbe(1)) as sup:
        first_pid = sup.status()[0].pid
        await sup.restart("r0", "gateway: 3 requests timed out")
        await wait_for(lambda: sup.status()[0].restarts == 1 and sup.status()[0].state is ReplicaState.READY)
        assert sup.status()[0].pid != first_pid
        backoff = next(e for e in events if e.state is ReplicaState.BACKOFF)
        assert backoff.reason.startswith("gateway: 3 requests timed out")
    (attached,) = attached_replica_specs([spec.url])
    with pytest.raises(ValueError, match="not ours"):
        await ReplicaSupervisor([attached]).restart(attached.replica_id)


async def test_a_failing_probe_fails_start_instead_of_hanging(fake_server: Path, tmp_path: Path) -> None:
    class BrokenProbe:
        async def ready(self, url: str) -> bool:
            raise RuntimeError("probe bug")

        async def healthy(self, url: str) -> bool:
            return True

        async def close(self) -> None:
            pass

    sup = ReplicaSupervisor([make_spec(fake_server, tmp_path, "r0")], config=FAST, probe=BrokenProbe())
    with pytest.raises(ReplicaStartError, match="supervisor error: RuntimeError"):
        await sup.start()
    assert sup.status()[0].pid is None  # the process it had spawned was stopped
    await sup.stop()
