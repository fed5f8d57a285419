"""The live driver of a policy bundle: what the gateway asks and tells the pure policies.

The replay runner (``replay/runner.py``) drives the same bundle on a virtual clock; this
module does it on the wall clock, call for call in the same order:

- ``route``: the router sees the pool's ``ReplicaView``s with ``cached_prefix_tokens``
  from the KV-event prefix index (``sglang_backend/kv_index.py``) when replicas publish;
- ``started``: the priority policy is asked once (SGLang fixes priority at submission;
  sent only to replicas running ``--enable-priority-scheduling``) and the cache hints
  are told ``on_start``;
- ``finished``: router, priority and cache hints are told (one ``CallOutcome``); a
  ``PrefetchAction`` becomes a prefill-only warm request (``max_new_tokens`` 0) on its
  replica at ``at_s`` (an asyncio timer), sent only with headroom and when the index does
  not already show the prefix there, counted, and reported back through the policy's
  optional ``on_prefetch_result(action, sent)``;
- ``engine_session``: a call (and a warm) carries its session tag as SGLang's top-level
  ``session_id`` to replicas running ``--enable-session-radix-cache``, so the engine holds
  the session's KV until it is closed;
- ``end_session``: cache hints are told, and replicas that served the session and run
  SGLang's session radix cache get ``/close_session``.

Policy time (``now_s``, ``CallInfo.arrival_s``, ``CallOutcome.finished_s``) is wall-clock
seconds since the driver was made, as replay's virtual clock starts at 0: policies that
encode a time in a priority (Continuum's program FCFS, milliseconds) then stay inside the
integer range engines accept. A Pythia bundle sharing the gateway's profiler feeds it every
call first, on this clock (the feed's later copy of the same call id is a duplicate).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Coroutine, Sequence
from dataclasses import replace
from typing import Any

from pythia_server.errors import UpstreamError
from pythia_server.gateway.pool import Replica, ReplicaPool
from pythia_server.gateway.warm_ledger import WarmLedger, WarmStats
from pythia_server.policy.types import (
    CallInfo,
    CallOutcome,
    PolicyBundle,
    PrefetchAction,
    ReplicaView,
    RouteDecision,
)
from pythia_server.sglang_backend.features import FeatureSet
from pythia_server.sglang_backend.kv_index import KvEventHub, endpoints_from_server_info

__all__ = ["PolicyDriver", "WarmStats"]

log = logging.getLogger(__name__)

_MAX_SESSIONS = 100_000  # live sessions remembered (replicas served, last call)


class PolicyDriver:
    """One bundle over one replica pool; all methods run on the gateway's event loop."""

    def __init__(self, bundle: PolicyBundle, pool: ReplicaPool, block_size: int,
                 hub: KvEventHub | None = None, origin_s: float | None = None) -> None:
        #: Unix time of policy time 0.
        self.origin_s = time.time() if origin_s is None else origin_s
        self.bundle = bundle
        self.pool = pool
        self.block_size = block_size
        self.hub = hub
        self._warm_ledger = WarmLedger(block_size)
        self.warms = self._warm_ledger.stats
        self.priorities_sent = 0
        self.sessions_closed = 0
        self.features: dict[str, FeatureSet] = {}
        self._kv_endpoints: dict[str, tuple[str, str | None, str]] = {}
        #: live session -> (replicas that served it, its last call in policy time), oldest first
        self._sessions: OrderedDict[str, tuple[set[str], float]] = OrderedDict()
        self._tasks: set[asyncio.Task[object]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._report = getattr(bundle.cache_hints, "on_prefetch_result", None)

    # -- replicas ----------------------------------------------------------------------------

    def needed_features(self) -> set[str]:
        """The SGLang features this bundle acts through; a missing one is worth a warning."""
        needed = {"metrics", "cache_report"}
        if self.bundle.priority is not None:
            needed.add("priority_scheduling")
        if self.bundle.engine.radix_eviction_policy == "priority":
            needed.update(("priority_eviction", "priority_retraction"))
        if self.bundle.cache_hints is not None:
            needed.add("session_radix_cache")
        return needed

    def replica_features(self) -> list[dict[str, object]]:
        """Per pool replica, its SGLang version and what it lacks, for the report's ``replicas``.

        A missing feature the bundle acts through is ``used_by_policy``; the others are only
        noted. A replica that never answered ``/server_info`` has ``server_info: false``.
        """
        needed = self.needed_features()
        rows: list[dict[str, object]] = []
        for replica in self.pool.replicas():
            features = self.features.get(replica.replica_id)
            missing = [] if features is None else [
                {"feature": f.name, "reason": f.reason, "used_by_policy": f.name in needed}
                for f in features.degraded()]
            missing.sort(key=lambda m: (not m["used_by_policy"], str(m["feature"])))
            rows.append({"replica": replica.replica_id,
                         "sglang_version": features.version if features is not None else None,
                         "server_info": features is not None,
                         "degraded": any(m["used_by_policy"] for m in missing),
                         "missing": missing})
        return rows

    async def replica_ready(self, replica: Replica) -> None:
        """A replica turned healthy: read its features (logged once) and follow its KV events."""
        try:
            info = await replica.client.server_info()
        except UpstreamError as exc:  # an OpenAI-only upstream has no /server_info: no features
            log.info("replica %s: no /server_info (%s); serving without SGLang features", replica.replica_id, exc)
            return
        if not isinstance(info, dict):
            return
        features = FeatureSet.from_server_info(info, loads_endpoint=replica.loads_supported)
        if replica.replica_id not in self.features:
            features.log_degradations(replica.replica_id, self.needed_features())
        self.features[replica.replica_id] = features
        replica.features = features.as_dict()
        if self.hub is None:
            return
        host = replica.url.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]") or "127.0.0.1"
        endpoints = endpoints_from_server_info(info, host)
        if not endpoints:
            return
        endpoint = endpoints[0]  # one DP rank per replica here; ranks share one radix tree view
        try:
            if self._kv_endpoints.get(replica.replica_id) == endpoint:
                await self.hub.resync(replica.replica_id)
            else:
                await self.hub.attach(replica.replica_id, endpoint[0], endpoint[1], endpoint[2])
                self._kv_endpoints[replica.replica_id] = endpoint
        except Exception:  # the index is an optimisation: routing goes on without it
            log.exception("replica %s: cannot follow its KV events", replica.replica_id)

    def replica_down(self, replica_id: str) -> None:
        """A replica died or stopped answering: it holds nothing until its events say otherwise."""
        if self.hub is not None:
            self.hub.reset(replica_id)

    async def replica_removed(self, replica_id: str) -> None:
        """A replica left for good (scaled down): stop following its events, forget its features."""
        self.features.pop(replica_id, None)
        self._kv_endpoints.pop(replica_id, None)
        if self.hub is not None:
            await self.hub.detach(replica_id)

    def now_s(self) -> float:
        """Policy time now (the one clock read policies get, passed in as ``now_s``)."""
        return time.time() - self.origin_s

    def policy_time(self, unix_s: float) -> float:
        return unix_s - self.origin_s

    def supports(self, replica_id: str, feature: str) -> bool:
        features = self.features.get(replica_id)
        return features is not None and features.enabled(feature)

    # -- one call ----------------------------------------------------------------------------

    def remember_prompt(self, prompt_ids: Sequence[int], block_hashes: Sequence[int]) -> None:
        """Keep each full block's token ids, so a warm can be rebuilt from block hashes."""
        if self.bundle.cache_hints is not None:
            self._warm_ledger.remember(prompt_ids, block_hashes)

    def route(self, call: CallInfo, views: Sequence[ReplicaView], now_s: float) -> RouteDecision:
        if self.hub is not None and self._kv_endpoints and call.block_hashes:
            index = self.hub.index
            views = [replace(v, cached_prefix_tokens=index.matched_tokens(v.replica_id, call.block_hashes))
                     for v in views]
        return self.bundle.router.route(call, views, now_s)

    def started(self, call: CallInfo, replica_id: str, now_s: float, *, first: bool = True) -> int | None:
        """The call goes to ``replica_id``: its SGLang priority (None: send none).

        ``first`` False: a retry on another replica; the hints were told at the first try.
        """
        session = call.tags.session
        if session:
            served, _ = self._sessions.pop(session, (set(), now_s))
            served.add(replica_id)
            self._sessions[session] = (served, now_s)
            while len(self._sessions) > _MAX_SESSIONS:
                self._sessions.popitem(last=False)
        bundle = self.bundle
        priority = None
        if bundle.priority is not None:  # asked as replay asks it (policies keep state per call) ...
            priority = bundle.priority.priority(call, now_s)
            if not self.supports(replica_id, "priority_scheduling"):
                priority = None  # ... but sent only where the engine schedules by it
            elif priority is not None:
                self.priorities_sent += 1
        if bundle.cache_hints is not None and first:
            bundle.cache_hints.on_start(call, replica_id, now_s)
        return priority

    def engine_session(self, call: CallInfo, replica_id: str) -> str | None:
        """The ``session_id`` to send with ``call`` to ``replica_id`` (None: send none).

        Only replicas running SGLang's session radix cache get one: there it tags the call's
        KV for the session until ``/close_session`` (``end_session``), which is sent to every
        replica ``started`` recorded for the session.
        """
        session = call.tags.session
        if session and self.supports(replica_id, "session_radix_cache"):
            return session
        return None

    def finished(self, outcome: CallOutcome, now_s: float) -> None:
        """Tell every policy once; schedule the warms the cache hints ask for."""
        bundle = self.bundle
        session = outcome.call.tags.session
        if session and session in self._sessions:
            served, _ = self._sessions.pop(session)
            self._sessions[session] = (served, now_s)
        bundle.router.on_finish(outcome.call, outcome.replica_id, now_s)
        if bundle.priority is not None:
            bundle.priority.on_finish(outcome, now_s)
        if outcome.ok and outcome.cached_tokens:
            self._warm_ledger.count_hits(outcome)
        if bundle.cache_hints is not None:
            for action in bundle.cache_hints.on_finish(outcome, now_s):
                self._schedule(action, now_s)

    def end_session(self, session: str, now_s: float) -> None:
        """The session is over (root span or idle): tell the hints, close it on the engines."""
        if self.bundle.cache_hints is not None:
            self.bundle.cache_hints.on_session_end(session, now_s)
        self._warm_ledger.end_session(session)
        served, _ = self._sessions.pop(session, (set(), now_s))
        for replica_id in sorted(served):
            if not self.supports(replica_id, "session_radix_cache"):
                continue
            try:
                replica = self.pool.get(replica_id)
            except KeyError:
                continue
            self._spawn(self._close(replica, session))

    def end_idle_sessions(self, now_s: float, idle_timeout_s: float) -> list[str]:
        """End sessions with no call for ``idle_timeout_s`` (the gateway sweeps periodically)."""
        cutoff = now_s - idle_timeout_s
        ended = []
        while self._sessions:
            session, (_, last_s) = next(iter(self._sessions.items()))
            if last_s > cutoff:
                break
            self.end_session(session, now_s)
            ended.append(session)
        return ended

    async def _close(self, replica: Replica, session: str) -> None:
        if await replica.client.close_session(session):
            self.sessions_closed += 1

    # -- warming -------------------------------------------------------------------------------

    def _schedule(self, action: PrefetchAction, now_s: float) -> None:
        self.warms.scheduled += 1
        loop = asyncio.get_running_loop()
        delay_s = max(action.at_s - now_s, 0.0)

        def fire() -> None:
            self._timers.discard(handle)
            self._spawn(self._warm(action))

        handle = loop.call_later(delay_s, fire)
        self._timers.add(handle)

    async def _warm(self, action: PrefetchAction) -> None:
        sent = False
        try:
            sent = await self._send_warm(action)
        finally:
            if self._report is not None:
                try:
                    self._report(action, sent)
                except Exception:
                    log.exception("on_prefetch_result failed")

    async def _send_warm(self, action: PrefetchAction) -> bool:
        ids, blocks = self._warm_ledger.rebuild(action.block_hashes)
        try:
            replica = self.pool.get(action.replica_id)
        except KeyError:
            replica = None
        if replica is None or not replica.healthy or blocks == 0:
            self.warms.dropped += 1
            return False
        if self.hub is not None and action.replica_id in self._kv_endpoints:
            cached = self.hub.index.matched_tokens(action.replica_id, action.block_hashes[:blocks])
            if cached >= len(ids):
                self.warms.resident += 1
                return False
        view = replica.view()
        if view.total_kv_tokens and view.free_kv_tokens < len(ids):
            self.warms.dropped += 1  # no headroom: a warm must not evict what running calls need
            return False
        rid = self._warm_ledger.new_rid()
        session_id = None
        live = self._sessions.get(action.owner.session) if action.owner.session else None
        if live is not None and self.supports(action.replica_id, "session_radix_cache"):
            session_id = action.owner.session
            live[0].add(action.replica_id)  # so end_session closes it there too
        if not await replica.client.warm(ids, rid=rid, session_id=session_id):
            self.warms.dropped += 1
            return False
        self._warm_ledger.sent(action, blocks, len(ids))
        return True

    def cache_action_log(self) -> list[dict[str, Any]]:
        """The latest warms with their outcomes (bounded), for the report's cache section."""
        return self._warm_ledger.action_log()

    # -- lifecycle -----------------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.hub is not None:
            with contextlib.suppress(Exception):
                await self.hub.close()

    def describe(self) -> dict[str, object]:
        """The bundle and what driving it did, for ``/pythia/api/replicas`` and the report."""
        bundle = self.bundle
        kv: dict[str, object] = {}
        if self.hub is not None:
            kv = {rid: {"batches": s.batches, "events": s.events, "gaps": s.gaps, "resets": s.resets,
                        "blocks": self.hub.index.block_count(rid)} for rid, s in self.hub.stats().items()}
        return {"name": bundle.name, "description": bundle.description, "router": bundle.router.name,
                "priority": bundle.priority.name if bundle.priority is not None else None,
                "cache_hints": bundle.cache_hints.name if bundle.cache_hints is not None else None,
                "priority_scheduling": bundle.engine.enable_priority_scheduling,
                "priorities_sent": self.priorities_sent, "warms": self.warms.as_dict(),
                "sessions_closed": self.sessions_closed, "kv_events": kv}


