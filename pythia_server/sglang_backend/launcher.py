"""Start, watch and stop engine replicas as subprocesses: real SGLang or the simulated engine.

The supervisor owns processes, never requests. It knows a replica by its `ReplicaSpec`
(a command line and the URL it will serve), shows it ready once `/health` answers 200
(and `/ready`, where the server has one), restarts it with exponential backoff when it
dies, marks it unhealthy when it stops answering, and stops it with SIGTERM then SIGKILL
(to its whole process group: SGLang forks scheduler and detokenizer processes). Who
routes to which replica is the gateway's business; it learns about changes through the
`on_state_change` callback and `urls()`, and may ask for `restart(id)` (a replica it found
hung or answering garbage) or `drain(id)` (scale-down).

A spec with an empty `argv` is *attached*: a server someone else runs, probed but never
spawned, restarted or signalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from pythia_server.aio import cancel_and_wait
from pythia_server.sglang_backend.probe import HttpProbe, Probe
from pythia_server.sglang_backend.processes import log_tail, spawn_process_group, terminate_process_group
from pythia_server.sglang_backend.replica_specs import (  # re-exported: the supervisor's vocabulary
    ReplicaSpec,
    attached_replica_specs,
    free_ports,
    sim_replica_specs,
)

__all__ = [
    "ReplicaEvent",
    "ReplicaSpec",
    "ReplicaStartError",
    "ReplicaState",
    "ReplicaStatus",
    "ReplicaSupervisor",
    "SupervisorConfig",
    "attached_replica_specs",
    "backoff_delay_s",
    "free_ports",
    "sim_replica_specs",
]

log = logging.getLogger(__name__)


class ReplicaState(str, Enum):
    STARTING = "starting"  # spawned; readiness not shown yet
    READY = "ready"
    UNHEALTHY = "unhealthy"  # running but failing health probes: route nothing to it
    BACKOFF = "backoff"  # died; waiting to be restarted
    DRAINING = "draining"  # leaving: route nothing new, let in-flight work finish
    STOPPED = "stopped"
    FAILED = "failed"  # gave up on it


@dataclass(frozen=True, slots=True)
class SupervisorConfig:
    """Timings. SGLang loads weights for minutes; the simulated engine starts in a second."""

    ready_timeout_s: float = 900.0
    startup_probe_interval_s: float = 0.2
    health_interval_s: float = 5.0
    unhealthy_after_failures: int = 3
    restart_unhealthy_after_s: float | None = 120.0  # a hung replica is killed and restarted
    backoff_initial_s: float = 1.0
    backoff_factor: float = 2.0
    backoff_max_s: float = 60.0
    backoff_reset_after_s: float = 300.0  # READY this long: the next death starts from initial
    max_restarts: int | None = None
    stop_grace_s: float = 15.0  # SIGTERM, then SIGKILL after this


@dataclass(frozen=True, slots=True)
class ReplicaEvent:
    """A state change, handed to `on_state_change`."""

    replica_id: str
    url: str
    previous: ReplicaState
    state: ReplicaState
    reason: str
    restarts: int


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    replica_id: str
    url: str
    state: ReplicaState
    pid: int | None
    restarts: int
    last_exit_code: int | None
    reason: str
    log_path: Path | None


class ReplicaStartError(RuntimeError):
    """A replica did not become ready on its first launch (bad flags, port taken, ...)."""


@dataclass(slots=True)
class _Replica:
    spec: ReplicaSpec
    state: ReplicaState = ReplicaState.STOPPED
    reason: str = ""
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    last_exit_code: int | None = None
    task: asyncio.Task[None] | None = None
    first_outcome: asyncio.Future[str | None] | None = None  # None = ready, else the error
    leaving: bool = False
    kill_reason: str | None = None  # set by restart(): why the coming exit happened


def backoff_delay_s(config: SupervisorConfig, consecutive_failures: int) -> float:
    """Delay before restart number `consecutive_failures` (1-based)."""
    exponent = max(consecutive_failures - 1, 0)
    return min(config.backoff_initial_s * config.backoff_factor**exponent, config.backoff_max_s)


class ReplicaSupervisor:
    """Runs a set of replicas; `await start()`, `urls()`, `await drain(id)`, `await stop()`."""

    def __init__(
        self,
        specs: Iterable[ReplicaSpec] = (),
        *,
        config: SupervisorConfig | None = None,
        on_state_change: Callable[[ReplicaEvent], None] | None = None,
        probe: Probe | None = None,
    ) -> None:
        self.config = config or SupervisorConfig()
        self._on_state_change = on_state_change
        self._probe: Probe = probe or HttpProbe()
        self._replicas: dict[str, _Replica] = {}
        for spec in specs:
            self._check_new(spec)
            self._replicas[spec.replica_id] = _Replica(spec)
        self._stopping = False

    # ---- public API ------------------------------------------------------------------

    async def start(self) -> None:
        """Launch every replica and wait until all are ready; on any failure stop all and raise."""
        await self._launch([r for r in self._replicas.values() if r.task is None])

    async def add(self, spec: ReplicaSpec) -> None:
        """Scale up by one replica; returns when it is ready (raises ReplicaStartError if not)."""
        self._check_new(spec)
        replica = _Replica(spec)
        self._replicas[spec.replica_id] = replica
        try:
            await self._launch([replica])
        except ReplicaStartError:
            self._replicas.pop(spec.replica_id, None)
            raise

    async def restart(self, replica_id: str, reason: str = "restart requested") -> None:
        """Kill a replica found hung or answering garbage; it returns through backoff and readiness."""
        replica = self._replicas[replica_id]
        if replica.spec.attached:
            raise ValueError(f"replica {replica_id} is attached: it is not ours to restart")
        replica.kill_reason = reason
        await self._terminate(replica)

    async def drain(
        self,
        replica_id: str,
        until_idle: Callable[[], Awaitable[object]] | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        """Scale down gracefully: DRAINING (route nothing new), wait for `until_idle`, stop, forget."""
        replica = self._replicas[replica_id]
        replica.leaving = True
        self._set(replica, ReplicaState.DRAINING, "draining")
        if until_idle is not None:
            try:
                await asyncio.wait_for(until_idle(), timeout_s)
            except asyncio.TimeoutError:
                log.warning("replica %s still busy after %.0fs of draining; stopping", replica_id, timeout_s)
        await self._halt(replica, "drained")
        self._replicas.pop(replica_id, None)

    async def stop(self) -> None:
        """Stop every replica (SIGTERM, then SIGKILL after the grace period) and the probes."""
        self._stopping = True
        await asyncio.gather(*(self._halt(r, "supervisor stopped") for r in list(self._replicas.values())))
        await self._probe.close()

    def urls(self, *, ready_only: bool = False) -> list[str]:
        """Replica URLs in spec order; all that are not leaving, or only those READY."""
        return [
            r.spec.url
            for r in self._replicas.values()
            if not r.leaving and (r.state is ReplicaState.READY or not ready_only)
        ]

    def status(self) -> list[ReplicaStatus]:
        return [
            ReplicaStatus(
                replica_id=r.spec.replica_id,
                url=r.spec.url,
                state=r.state,
                pid=r.process.pid if r.process and r.process.returncode is None else None,
                restarts=r.restarts,
                last_exit_code=r.last_exit_code,
                reason=r.reason,
                log_path=r.spec.log_path,
            )
            for r in self._replicas.values()
        ]

    @property
    def specs(self) -> list[ReplicaSpec]:
        return [r.spec for r in self._replicas.values()]

    async def __aenter__(self) -> ReplicaSupervisor:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- lifecycle ---------------------------------------------------------------------

    def _check_new(self, spec: ReplicaSpec) -> None:
        if spec.replica_id in self._replicas:
            raise ValueError(f"duplicate replica_id {spec.replica_id!r}")

    async def _launch(self, replicas: Sequence[_Replica]) -> None:
        loop = asyncio.get_running_loop()
        for replica in replicas:
            replica.first_outcome = loop.create_future()
            replica.task = asyncio.create_task(self._run_guarded(replica), name=f"replica-{replica.spec.replica_id}")
        errors = []
        for replica in replicas:
            assert replica.first_outcome is not None
            error = await replica.first_outcome
            if error is not None:
                errors.append(f"replica {replica.spec.replica_id} ({replica.spec.url}): {error}")
        if errors:
            await asyncio.gather(*(self._halt(r, "start failed") for r in replicas))
            raise ReplicaStartError("; ".join(errors))

    async def _run_guarded(self, replica: _Replica) -> None:
        """A bug in supervision fails this replica loudly instead of leaving start() waiting."""
        try:
            await self._run(replica)
        except Exception as exc:
            log.exception("supervising replica %s failed", replica.spec.replica_id)
            if replica.first_outcome is not None and not replica.first_outcome.done():
                replica.first_outcome.set_result(f"supervisor error: {exc!r}")
            self._set(replica, ReplicaState.FAILED, f"supervisor error: {exc!r}")

    async def _run(self, replica: _Replica) -> None:
        """One replica's life: spawn, become ready, watch, restart with backoff on death."""
        failures = 0
        while not (self._stopping or replica.leaving):
            error = await self._spawn_and_wait_ready(replica)
            if replica.first_outcome is not None and not replica.first_outcome.done():
                replica.first_outcome.set_result(error)
                if error is not None:
                    return  # first launch failed: start()/add() reports it and cleans up
            if error is None:
                ready_at = time.monotonic()
                error = await self._watch(replica)
                if time.monotonic() - ready_at >= self.config.backoff_reset_after_s:
                    failures = 0
            if self._stopping or replica.leaving or replica.spec.attached:
                return
            await self._terminate(replica)
            failures += 1
            cfg = self.config
            if cfg.max_restarts is not None and replica.restarts >= cfg.max_restarts:
                self._set(replica, ReplicaState.FAILED, f"{error}; gave up after {replica.restarts} restarts")
                return
            delay_s = backoff_delay_s(cfg, failures)
            self._set(replica, ReplicaState.BACKOFF, f"{error}; restarting in {delay_s:.1f}s")
            await asyncio.sleep(delay_s)
            replica.restarts += 1

    async def _spawn_and_wait_ready(self, replica: _Replica) -> str | None:
        """Spawn (unless attached) and wait for readiness; None when ready, else why not."""
        spec = replica.spec
        if not spec.attached:
            try:
                replica.process = await self._spawn(spec, replica.restarts)
            except OSError as exc:
                self._set(replica, ReplicaState.FAILED, f"cannot start {spec.argv[0]}: {exc}")
                return f"cannot start {spec.argv[0]}: {exc}"
        self._set(replica, ReplicaState.STARTING, f"start #{replica.restarts + 1}")
        deadline = time.monotonic() + self.config.ready_timeout_s
        while time.monotonic() < deadline:
            exited = self._exit_reason(replica)
            if exited:
                return exited
            if await self._probe.ready(spec.url):
                self._set(replica, ReplicaState.READY, "ready")
                return None
            await self._sleep_or_exit(replica, self.config.startup_probe_interval_s)
        return self._exit_reason(replica) or f"not ready after {self.config.ready_timeout_s:.0f}s"

    async def _watch(self, replica: _Replica) -> str:
        """Probe a ready replica until its process exits or it hangs too long; returns why."""
        cfg = self.config
        failed_probes = 0
        unhealthy_since: float | None = None
        while True:
            await self._sleep_or_exit(replica, cfg.health_interval_s)
            exited = self._exit_reason(replica)
            if exited:
                return exited
            if replica.leaving or self._stopping:
                return "leaving"
            if await self._probe.healthy(replica.spec.url):
                failed_probes, unhealthy_since = 0, None
                if replica.state is ReplicaState.UNHEALTHY:
                    self._set(replica, ReplicaState.READY, "health probes pass again")
                continue
            failed_probes += 1
            if failed_probes >= cfg.unhealthy_after_failures and replica.state is ReplicaState.READY:
                unhealthy_since = time.monotonic()
                self._set(replica, ReplicaState.UNHEALTHY, f"{failed_probes} health probes failed")
            if (
                unhealthy_since is not None
                and not replica.spec.attached
                and cfg.restart_unhealthy_after_s is not None
                and time.monotonic() - unhealthy_since >= cfg.restart_unhealthy_after_s
            ):
                return f"unhealthy for {cfg.restart_unhealthy_after_s:.0f}s"

    async def _halt(self, replica: _Replica, reason: str) -> None:
        replica.leaving = True
        task, replica.task = replica.task, None
        if task is not asyncio.current_task():
            await cancel_and_wait(task)
        if replica.first_outcome is not None and not replica.first_outcome.done():
            replica.first_outcome.set_result(reason)
        await self._terminate(replica)
        if replica.state is not ReplicaState.STOPPED:
            self._set(replica, ReplicaState.STOPPED, reason)

    # ---- processes ---------------------------------------------------------------------

    async def _spawn(self, spec: ReplicaSpec, restarts: int) -> asyncio.subprocess.Process:
        return await spawn_process_group(spec.argv, spec.env, spec.log_path, f"start #{restarts + 1}")

    async def _terminate(self, replica: _Replica) -> None:
        if replica.process is not None:
            replica.last_exit_code = await terminate_process_group(
                replica.process, self.config.stop_grace_s, replica.spec.replica_id
            )

    def _exit_reason(self, replica: _Replica) -> str | None:
        process = replica.process
        if replica.spec.attached or process is None or process.returncode is None:
            return None
        replica.last_exit_code = process.returncode
        if replica.kill_reason is not None:
            reason, replica.kill_reason = replica.kill_reason, None
            return reason
        tail = log_tail(replica.spec.log_path)
        return f"exited with code {process.returncode}" + (f"; log tail: {tail}" if tail else "")

    async def _sleep_or_exit(self, replica: _Replica, delay_s: float) -> None:
        process = replica.process
        if replica.spec.attached or process is None or process.returncode is not None:
            await asyncio.sleep(delay_s)
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(process.wait()), delay_s)

    def _set(self, replica: _Replica, state: ReplicaState, reason: str) -> None:
        previous = replica.state
        replica.state, replica.reason = state, reason
        if previous is state:
            return
        log.info("replica %s: %s -> %s (%s)", replica.spec.replica_id, previous.value, state.value, reason)
        if self._on_state_change is not None:
            event = ReplicaEvent(replica.spec.replica_id, replica.spec.url, previous, state, reason, replica.restarts)
            try:
                self._on_state_change(event)
            except Exception:  # a listener's bug must not kill supervision
                log.exception("on_state_change listener failed for %s", event)
