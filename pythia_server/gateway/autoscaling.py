"""The live gateway's autoscaler: the replay's ``Scaler`` objects, acting on real processes.

``serve --autoscale {reactive,phase-adaptive}`` ticks a scaler against the pool and acts
on each decision by the rule of ``pythia_server/fleet.py`` (the replay applies the same
rule to its virtual cluster, so both measure one policy):

- a launch spawns a simulated engine (``pythia-server sim --cold-start-s``: the process
  listens only after its modelled model load, as SGLang does); the pool routes to it once
  the supervisor finds it ready, and the policy driver follows its KV events;
- a drained replica leaves routing at once, is stopped once the gateway has no call on it
  and its engine queue is empty, and is revived instead if demand returns first;
- a cancelled start is stopped as soon as its process answers (or fails).

Scaler time is the policy driver's clock (wall seconds); with ``--speedup`` the cold start
the scaler plans with is the engine's divided by the speed-up. Decisions are kept in
memory for the report's autoscaler section (``describe``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from pythia_server.fleet import FleetChange, ReplicaFleet, ScaleRecord, replica_seconds
from pythia_server.gateway.pool import ReplicaPool
from pythia_server.policy.types import PolicyBundle, Scaler, ScaleTick
from pythia_server.sglang_backend.launcher import ReplicaStartError, ReplicaSupervisor
from pythia_server.sglang_backend.replica_specs import ReplicaSpec

__all__ = ["SCALER_KINDS", "LiveScaleDriver", "make_live_scaler", "setup_from_args"]

log = logging.getLogger(__name__)

SCALER_KINDS = ("reactive", "phase-adaptive")
MIN_TICK_S = 0.1
_MAX_LOG = 500
_IDLE_POLL_S = 0.2


def make_live_scaler(kind: str, bundle: PolicyBundle, *, cold_start_s: float, min_replicas: int,
                     max_replicas: int, target_calls_per_replica: float = 16.0, speedup: float = 1.0) -> Scaler:
    """The scaler ``--autoscale`` names, configured as the replay configures it.

    Time constants (``cold_start_s``, the reactive windows and tick, the phase-adaptive
    step and drain delay) are engine seconds, as in the replay; the live scaler runs on the
    gateway's wall clock, so each is divided by the engines' ``speedup``.
    ``phase-adaptive`` forecasts from the live sessions a Pythia bundle tracks, so it needs
    one (``--policy pythia`` or a variant); ``reactive`` works with every bundle.
    """
    from pythia_server.policy.pythia.autoscale import (
        PhaseAdaptiveAutoscaler,
        PhaseConfig,
        ReactiveAutoscaler,
        ReactiveConfig,
    )

    if kind not in SCALER_KINDS:
        raise ValueError(f"unknown autoscaler {kind!r}; known: {', '.join(SCALER_KINDS)}")
    if cold_start_s < 0:
        raise ValueError("the cold start must not be negative")
    if speedup <= 0:
        raise ValueError("the speed-up must be positive")
    wall = 1.0 / speedup
    base = ReactiveConfig()
    reactive = ReactiveConfig(target_calls_per_replica=target_calls_per_replica, min_replicas=min_replicas,
                              max_replicas=max_replicas, stable_window_s=base.stable_window_s * wall,
                              panic_window_s=base.panic_window_s * wall, tick_s=base.tick_s * wall)
    if kind == "reactive":
        return ReactiveAutoscaler(reactive)
    from pythia_server.policy.pythia.bundle import ContextScaler
    from pythia_server.policy.pythia.context import PythiaContext

    context = getattr(bundle.router, "context", None)
    if not isinstance(context, PythiaContext):  # a bad choice of flags, not of types: ValueError
        raise ValueError(  # noqa: TRY004
            f"the phase-adaptive autoscaler forecasts from a Pythia bundle's live sessions; "
            f"policy {bundle.name!r} has none (use --autoscale reactive)")
    phase = PhaseConfig()
    phase = PhaseConfig(cold_start_s=cold_start_s * wall, step_s=phase.step_s * wall,
                        drain_delay_s=phase.drain_delay_s * wall, horizon_steps=phase.horizon_steps)
    return ContextScaler(context, PhaseAdaptiveAutoscaler(phase, reactive))


class LiveScaleDriver:
    """Ticks ``scaler`` and spawns, drains and stops replicas through ``supervisor``."""

    def __init__(self, scaler: Scaler, fleet: ReplicaFleet, pool: ReplicaPool, supervisor: ReplicaSupervisor,
                 make_spec: Callable[[str], ReplicaSpec], now_s: Callable[[], float], *,
                 origin_s: float = 0.0, drain_timeout_s: float = 60.0,
                 on_removed: Callable[[str], Awaitable[None]] | None = None) -> None:
        self.scaler, self.fleet, self.pool, self.supervisor = scaler, fleet, pool, supervisor
        self.make_spec, self.now_s = make_spec, now_s
        self.origin_s = origin_s  # Unix time of driver time 0: reports show Unix seconds
        self.drain_timeout_s = drain_timeout_s
        self.on_removed = on_removed  # e.g. the policy driver, to stop following the replica's KV events
        self.log: deque[ScaleRecord] = deque(maxlen=_MAX_LOG)  # ticks that changed something
        self._changes: deque[dict[str, Any]] = deque(maxlen=_MAX_LOG)  # replica-count changes, for reports
        self.peak_replicas = fleet.up
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._run(), name="pythia-autoscaler")

    async def stop(self) -> None:
        tasks = [t for t in (self._loop_task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _run(self) -> None:
        while True:
            try:
                next_s = self.tick()
            except Exception:  # a scaler's bug must not stop serving; try again later
                log.exception("autoscaler tick failed")
                next_s = self.now_s() + 5.0
            await asyncio.sleep(max(next_s - self.now_s(), MIN_TICK_S))

    def tick(self) -> float:
        """Ask the scaler once and act; returns when to ask again (driver seconds)."""
        now_s = self.now_s()
        before = len(self.fleet.serving) + len(self.fleet.starting)
        views = tuple(v for v in self.pool.views() if self.fleet.is_serving(v.replica_id))
        decision = self.scaler.decide(ScaleTick(now_s=now_s, replicas=views,
                                                starting_replicas=len(self.fleet.starting)))
        change = self.fleet.apply(decision, now_s)
        self._act(change)
        self.peak_replicas = max(self.peak_replicas, self.fleet.up)
        record = self.fleet.record(now_s, decision)
        if not self.log or _differs(self.log[-1], record):
            self.log.append(record)
        after = record.serving + record.starting
        if after != before:
            self._changes.append({"at_s": self.origin_s + now_s, "from_replicas": before, "to_replicas": after,
                                  "reason": decision.reason})
        if change != FleetChange():
            log.info("autoscaler: %s (serving %d, starting %d, draining %d)", decision.reason,
                     record.serving, record.starting, record.draining)
        return max(decision.next_tick_s, now_s + MIN_TICK_S)

    def describe(self) -> dict[str, Any]:
        """The report's ``autoscaler`` mapping (docs/reports.md)."""
        now_s = self.now_s()
        return {"enabled": True, "policy": self.scaler.name, "replicas": len(self.fleet.serving),
                "starting": len(self.fleet.starting), "draining": len(self.fleet.draining),
                "peak_replicas": self.peak_replicas,
                # wall seconds of replicas up (launch to removal, cold start included) since the gateway started
                "replica_seconds": round(replica_seconds(self.fleet.spans(), 0.0, now_s), 3),
                "decisions": list(self._changes)}

    # -- acting -----------------------------------------------------------------------------

    def _act(self, change: FleetChange) -> None:
        for replica_id in change.drained:
            self._set_draining(replica_id, True)
            self._spawn(self._stop_when_idle(replica_id))
        for replica_id in change.revived:
            self._set_draining(replica_id, False)
        for replica_id, _ in change.launched:
            self._spawn(self._launch(replica_id))
        # A cancelled start is stopped by its own _launch once the process answers or fails.

    def _set_draining(self, replica_id: str, draining: bool) -> None:
        with contextlib.suppress(KeyError):
            self.pool.get(replica_id).draining = draining

    async def _launch(self, replica_id: str) -> None:
        spec = self.make_spec(replica_id)
        replica = self.pool.add(replica_id, spec.url)
        replica.reason = "cold start"
        try:
            await self.supervisor.add(spec)  # READY reaches the pool through the supervisor's listener
        except ReplicaStartError as exc:
            log.error("autoscaler: replica %s did not start: %s", replica_id, exc)
            self.fleet.failed(replica_id, self.now_s())
            await self._forget(replica_id)
            return
        if not self.fleet.ready(replica_id, self.now_s()):  # cancelled while it started
            await self.supervisor.drain(replica_id)
            await self._forget(replica_id)

    async def _stop_when_idle(self, replica_id: str) -> None:
        waited_s = 0.0
        while replica_id in self.fleet.draining:
            try:
                replica = self.pool.get(replica_id)
            except KeyError:
                break
            idle = replica.running_requests == 0 and not replica.engine_waiting_requests
            if idle or waited_s >= self.drain_timeout_s:
                self.fleet.remove(replica_id, self.now_s())
                await self.supervisor.drain(replica_id)
                await self._forget(replica_id)
                return
            await asyncio.sleep(_IDLE_POLL_S)
            waited_s += _IDLE_POLL_S
        # Revived meanwhile: it keeps serving.

    async def _forget(self, replica_id: str) -> None:
        self.pool.remove(replica_id)
        if self.on_removed is not None:
            try:
                await self.on_removed(replica_id)
            except Exception:
                log.exception("autoscaler: cleaning up after replica %s failed", replica_id)

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("autoscaler action failed", exc_info=task.exception())


def setup_from_args(args: argparse.Namespace, config: Any, log_dir: str | None) -> Any:
    """``serve``'s ``--autoscale`` flags checked (a ``CliError`` for bad ones) before any replica
    starts; returns None (fixed replicas) or ``(gateway, supervisor) -> LiveScaleDriver``."""
    from pythia_server.cli import CliError
    from pythia_server.gateway.command import sim_spec_factory

    if args.autoscale is None:
        if args.min_replicas is not None or args.max_replicas is not None:
            raise CliError("--min-replicas / --max-replicas need --autoscale")
        return None
    if args.backend_url or args.backend != "sim":
        raise CliError("--autoscale launches simulated replicas: it needs --backend sim without --backend-url "
                       "(launching SGLang replicas on demand needs free GPUs: not supported yet, see docs/gpu.md)")
    minimum = args.min_replicas if args.min_replicas is not None else args.replicas
    maximum = args.max_replicas if args.max_replicas is not None else max(4 * args.replicas, minimum)
    if not 1 <= minimum <= args.replicas <= maximum:
        raise CliError(f"need 1 <= --min-replicas ({minimum}) <= --replicas ({args.replicas}) "
                       f"<= --max-replicas ({maximum})")
    if args.cold_start_s < 0:
        raise CliError("--cold-start-s must not be negative")
    from pythia_server.policy.baselines.registry import make_policy

    if args.scale_target_calls <= 0:
        raise CliError("--scale-target-calls must be positive")
    speedup = args.speedup or 1.0

    def scaler_for(bundle: Any) -> Any:
        return make_live_scaler(args.autoscale, bundle, cold_start_s=args.cold_start_s, min_replicas=minimum,
                                max_replicas=maximum, target_calls_per_replica=args.scale_target_calls,
                                speedup=speedup)

    try:  # fail now, not after the replicas started: phase-adaptive needs a Pythia bundle
        scaler_for(make_policy(config.policy, block_size=config.block_size))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    make_spec = sim_spec_factory(args, log_dir, config, cold_start_s=args.cold_start_s)

    def setup(gateway: Any, supervisor: Any) -> Any:
        scaler = scaler_for(gateway.bundle)
        fleet = ReplicaFleet(cold_start_s=args.cold_start_s / speedup, id_prefix="sim-")
        now_s = gateway.driver.now_s()
        for _ in range(args.replicas):
            fleet.add_serving(now_s)
        return LiveScaleDriver(scaler, fleet, gateway.pool, supervisor, make_spec, gateway.driver.now_s,
                               origin_s=gateway.driver.origin_s, on_removed=gateway.driver.replica_removed)

    return setup


def _differs(a: ScaleRecord, b: ScaleRecord) -> bool:
    """Keep a record when something changed, not every quiet tick."""
    return (a.target_replicas, a.serving, a.starting, a.draining) != (b.target_replicas, b.serving, b.starting,
                                                                      b.draining)
