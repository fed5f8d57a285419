"""The replica pool: which replicas exist, which are healthy, and what the gateway has sent them.

The pool is the gateway's own view: outstanding requests and tokens it tracks as calls
start and finish, health from its probes (and from the supervisor's state changes when
replicas are spawned), and the models each replica serves. Routers see it as
:class:`ReplicaView` values; they never see the pool.

A replica that hangs or answers garbage is *quarantined*: unhealthy, and not probed again
until its backoff has passed (``quarantine_base_s``, doubled per strike up to
``quarantine_max_s``); a passing probe then lets it back in, a failing one re-quarantines
it with the next backoff. A call it serves successfully clears its strikes; a supervisor
reporting it ready again (a restarted process) clears its quarantine.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import aiohttp

from pythia_server.aio import cancel_and_wait
from pythia_server.errors import UpstreamError
from pythia_server.policy.types import ReplicaView
from pythia_server.sglang_backend.client import SGLangClient

__all__ = ["Replica", "ReplicaPool"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Replica:
    replica_id: str
    url: str
    client: SGLangClient
    healthy: bool = False
    reason: str = "not probed yet"
    models: tuple[str, ...] = ()
    running_requests: int = 0
    outstanding_tokens: int = 0
    served: int = 0
    failures: int = 0
    # From the engine's /v1/loads at the last probe (None: not reported).
    engine_waiting_requests: int | None = None
    engine_total_kv_tokens: int | None = None
    engine_used_kv_tokens: int | None = None
    loads_supported: bool = True
    metrics_supported: bool = True  # Prometheus /metrics, the load fallback
    #: ``FeatureSet.as_dict()`` from its ``/server_info`` (None: not read, or not SGLang).
    features: dict[str, object] | None = None
    #: Quarantines in a row without a successful call since; next probe not before this
    #: (``time.monotonic()``; None: not quarantined).
    strikes: int = 0
    quarantined_until: float | None = None
    quarantines: int = 0
    #: The autoscaler is releasing it: no new calls, stopped once idle (gateway/autoscaling.py).
    draining: bool = False

    def view(self) -> ReplicaView:
        total = self.engine_total_kv_tokens or 0
        return ReplicaView(replica_id=self.replica_id, healthy=self.healthy,
                           running_requests=self.running_requests,
                           queued_requests=self.engine_waiting_requests or 0,
                           outstanding_tokens=self.outstanding_tokens,
                           free_kv_tokens=max(total - (self.engine_used_kv_tokens or 0), 0),
                           total_kv_tokens=total)

    def describe(self) -> dict[str, object]:
        return {"replica_id": self.replica_id, "url": self.url, "healthy": self.healthy,
                "reason": self.reason, "models": list(self.models),
                "running_requests": self.running_requests,
                "outstanding_tokens": self.outstanding_tokens, "served": self.served,
                "failures": self.failures, "engine_waiting_requests": self.engine_waiting_requests,
                "engine_total_kv_tokens": self.engine_total_kv_tokens,
                "engine_used_kv_tokens": self.engine_used_kv_tokens, "features": self.features,
                "quarantined": self.quarantined_until is not None, "quarantines": self.quarantines,
                "strikes": self.strikes, "draining": self.draining}


class ReplicaPool:
    """Replicas by id; health probed every ``health_interval_s`` in the background."""

    def __init__(self, replicas: Iterable[tuple[str, str]], session: aiohttp.ClientSession, *,
                 health_interval_s: float = 2.0, health_timeout_s: float = 2.0,
                 first_byte_timeout_s: float | None = None, read_timeout_s: float | None = None,
                 quarantine_base_s: float = 5.0, quarantine_max_s: float = 300.0) -> None:
        self._session = session
        self._interval_s = health_interval_s
        self._timeout_s = health_timeout_s
        self._first_byte_timeout_s = first_byte_timeout_s
        self._read_timeout_s = read_timeout_s
        self._quarantine_base_s = quarantine_base_s
        self._quarantine_max_s = quarantine_max_s
        self._replicas: dict[str, Replica] = {}
        for replica_id, url in replicas:
            self.add(replica_id, url)
        self._task: asyncio.Task[None] | None = None
        #: Told when a replica turns healthy (awaited inside the probe) and when it stops being so.
        self.on_ready: Callable[[Replica], Awaitable[None]] | None = None
        self.on_down: Callable[[str], None] | None = None

    def add(self, replica_id: str, url: str) -> Replica:
        if replica_id in self._replicas:
            raise ValueError(f"replica {replica_id!r} already in the pool")
        client = SGLangClient(url, self._session, probe_timeout_s=self._timeout_s,
                              first_byte_timeout_s=self._first_byte_timeout_s, read_timeout_s=self._read_timeout_s)
        replica = Replica(replica_id, url, client)
        self._replicas[replica_id] = replica
        return replica

    def remove(self, replica_id: str) -> None:
        self._replicas.pop(replica_id, None)

    async def start(self) -> None:
        """Probe every replica once, then keep probing in the background."""
        await self.probe_all()
        self._task = asyncio.create_task(self._probe_loop(), name="pythia-health-probes")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    # -- views -----------------------------------------------------------------------------

    def get(self, replica_id: str) -> Replica:
        return self._replicas[replica_id]

    def replicas(self) -> list[Replica]:
        return list(self._replicas.values())

    def views(self, exclude: Iterable[str] = (), model: str | None = None) -> list[ReplicaView]:
        """Healthy replicas serving ``model`` as routers see them (``exclude``: ones already tried;
        draining ones are never shown)."""
        skip = set(exclude)
        return [r.view() for r in self._replicas.values()
                if r.healthy and not r.draining and r.replica_id not in skip and (model is None or model in r.models)]

    def models(self) -> set[str]:
        """Models served by at least one replica the gateway has ever reached."""
        return {m for r in self._replicas.values() for m in r.models}

    def healthy_count(self) -> int:
        return sum(1 for r in self._replicas.values() if r.healthy)

    # -- accounting ----------------------------------------------------------------------

    def begin(self, replica_id: str, tokens: int) -> None:
        replica = self._replicas.get(replica_id)
        if replica is not None:
            replica.running_requests += 1
            replica.outstanding_tokens += tokens

    def end(self, replica_id: str, tokens: int, *, ok: bool) -> None:
        replica = self._replicas.get(replica_id)
        if replica is not None:
            replica.running_requests = max(replica.running_requests - 1, 0)
            replica.outstanding_tokens = max(replica.outstanding_tokens - tokens, 0)
            replica.served += 1
            if not ok:
                replica.failures += 1
            elif replica.quarantined_until is None:
                replica.strikes = 0

    # -- health -----------------------------------------------------------------------------

    def mark_unhealthy(self, replica_id: str, reason: str) -> None:
        """Stop routing to a replica until a probe passes again."""
        replica = self._replicas.get(replica_id)
        if replica is not None and replica.healthy:
            log.warning("replica %s (%s) marked unhealthy: %s", replica_id, replica.url, reason)
            self._tell_down(replica_id)
        if replica is not None:
            replica.healthy = False
            replica.reason = reason

    def quarantine(self, replica_id: str, reason: str) -> float:
        """Take a hung or garbling replica out until its backoff passes; returns the backoff (s)."""
        replica = self._replicas.get(replica_id)
        if replica is None:
            return 0.0
        replica.strikes += 1
        replica.quarantines += 1
        backoff_s = min(self._quarantine_base_s * 2 ** (replica.strikes - 1), self._quarantine_max_s)
        replica.quarantined_until = time.monotonic() + backoff_s
        self.mark_unhealthy(replica_id, f"quarantined for {backoff_s:g}s: {reason}")
        return backoff_s

    def set_health(self, replica_id: str, healthy: bool, reason: str) -> None:
        """Told by a supervisor; a replica turning healthy gets its models refreshed."""
        replica = self._replicas.get(replica_id)
        if replica is None:
            return
        if healthy:
            replica.quarantined_until = None  # a (re)started process starts clean
            replica.strikes = 0
        if healthy and not replica.healthy:
            asyncio.get_running_loop().create_task(self.probe(replica))
        elif not healthy:
            self.mark_unhealthy(replica_id, reason)

    async def probe(self, replica: Replica) -> bool:
        quarantined = replica.quarantined_until is not None
        ok = await replica.client.health()
        if ok and (not replica.healthy or not replica.models):
            try:
                replica.models = tuple(await replica.client.models())
            except UpstreamError as exc:
                ok = False
                replica.reason = f"/v1/models failed: {exc.message}"
        if ok and (replica.loads_supported or replica.metrics_supported):
            await self._read_loads(replica)
        if ok and not replica.healthy:
            log.info("replica %s (%s) is healthy", replica.replica_id, replica.url)
            if self.on_ready is not None:
                try:
                    await self.on_ready(replica)
                except Exception:  # a listener's bug must not stop probing
                    log.exception("on_ready failed for replica %s", replica.replica_id)
        elif not ok and replica.healthy:
            self._tell_down(replica.replica_id)
        replica.healthy = ok
        if ok:
            replica.reason = "ok"
            if quarantined:
                log.info("replica %s (%s) passed its probe and leaves quarantine", replica.replica_id, replica.url)
                replica.quarantined_until = None
        elif quarantined:
            self.quarantine(replica.replica_id, "its health probe failed after quarantine")
        elif replica.reason in ("ok", "not probed yet"):
            replica.reason = "health probe failed"
        return ok

    def _tell_down(self, replica_id: str) -> None:
        if self.on_down is not None:
            try:
                self.on_down(replica_id)
            except Exception:
                log.exception("on_down failed for replica %s", replica_id)

    async def _read_loads(self, replica: Replica) -> None:
        """The engine's own queue and KV use from SGLang's /v1/loads (summed over DP ranks)."""
        if not replica.loads_supported:
            await self._read_load_metrics(replica)
            return
        try:
            data = await replica.client.loads()
        except UpstreamError:
            replica.loads_supported = False  # an older SGLang or another server: /metrics from now on
            await self._read_load_metrics(replica)
            return
        ranks = data.get("loads") if isinstance(data, dict) else None
        if not isinstance(ranks, list):
            return

        def total(key: str) -> int | None:
            values = [r.get(key) for r in ranks if isinstance(r, dict)]
            numbers = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
            return sum(numbers) if numbers else None

        replica.engine_waiting_requests = total("num_waiting_reqs")
        replica.engine_total_kv_tokens = total("max_total_num_tokens")
        replica.engine_used_kv_tokens = total("num_used_tokens")

    async def _read_load_metrics(self, replica: Replica) -> None:
        """The same view from SGLang's Prometheus gauges, for servers without ``/v1/loads``."""
        if not replica.metrics_supported:
            return
        try:
            load = await replica.client.load_metrics()
        except UpstreamError:
            replica.metrics_supported = False  # not SGLang, or run without --enable-metrics
            return
        replica.engine_waiting_requests = load.get("num_waiting_reqs")
        replica.engine_total_kv_tokens = load.get("max_total_num_tokens")
        replica.engine_used_kv_tokens = load.get("num_used_tokens")

    async def probe_all(self) -> None:
        """Probe every replica, except quarantined ones whose backoff has not passed."""
        now = time.monotonic()
        due = [r for r in self._replicas.values() if r.quarantined_until is None or r.quarantined_until <= now]
        await asyncio.gather(*(self.probe(r) for r in due))

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.probe_all()
            except Exception:  # a probe bug must not end probing
                log.exception("health probing failed")
