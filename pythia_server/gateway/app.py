"""The gateway's ASGI app: OpenAI routes, SGLang's /generate, health, metrics, JSON API.

:class:`Gateway` owns the pieces (HTTP session, replica pool, the policy bundle and its
driver, proxy, store, metrics, the KV-event prefix index) and their lifecycle; :func:`build_app` wraps it in a Starlette app whose
lifespan starts and stops it. Routes:

- ``POST /v1/chat/completions``, ``POST /v1/completions``, ``POST /generate``: proxied
- ``GET /v1/models`` (and ``/v1/models/{id}``): the union of the replicas' models
- ``POST /v1/traces``: OTLP/HTTP spans (when ``gateway/otlp.py`` is present)
- ``GET /health``, ``GET /metrics``
- ``GET /pythia/api/report`` (``?workflow=``; the full report with the profiler's view),
  ``/pythia/api/workflows`` (``/{name}``: what the profiler learned), ``/pythia/api/sessions``,
  ``/pythia/api/calls``, ``/pythia/api/replicas``
- ``GET /pythia/`` and below: the live report pages (``reports/pages.py``)

The profiler is fed by :class:`~pythia_server.gateway.learning.ProfilerFeed`, a call
listener that learns off the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from pythia_server.aio import cancel_and_wait
from pythia_server.config import GatewayConfig
from pythia_server.errors import (
    InvalidRequestError,
    NotFoundError,
    PythiaError,
    error_body,
)
from pythia_server.gateway.driver import PolicyDriver
from pythia_server.gateway.learning import ProfilerFeed
from pythia_server.gateway.metrics import CONTENT_TYPE_LATEST, GatewayMetrics
from pythia_server.gateway.pool import ReplicaPool
from pythia_server.gateway.proxy import Proxy
from pythia_server.gateway.workflows_api import (
    frozen_profiler,
    workflow_detail,
    workflow_summary,
)
from pythia_server.policy.baselines.registry import make_policy
from pythia_server.policy.types import PolicyBundle
from pythia_server.reports.enrich import (
    UNTAGGED,
    build_full_report,
    cache_action_summary,
)
from pythia_server.sglang_backend.client import make_session
from pythia_server.sglang_backend.kv_index import KvEventHub
from pythia_server.store.records import CallRecord
from pythia_server.store.sqlite import Store

__all__ = ["Gateway", "build_app", "make_gateway_bundle"]

log = logging.getLogger(__name__)

_API_LIMIT_MAX = 10_000


def make_gateway_bundle(config: GatewayConfig, learning: ProfilerFeed | None) -> PolicyBundle:
    """``config.policy`` as a fresh bundle; Pythia's shares the gateway's profiler (call ids dedupe)."""
    return make_policy(config.policy, block_size=config.block_size, router=config.router or None,
                       profiler=learning.profiler if learning is not None else None)


class Gateway:
    """The live driver: everything one running gateway owns."""

    def __init__(self, config: GatewayConfig, backends: Sequence[tuple[str, str]],
                 bundle: PolicyBundle | None = None) -> None:
        self.config = config
        self.backends = list(backends)
        self.metrics = GatewayMetrics(config.max_workflow_labels, config.max_agent_labels)
        self.store: Store | None = None
        self.pool: ReplicaPool | None = None
        self.proxy: Proxy | None = None
        #: Drives the bundle (router, priority, cache hints, warms, session close); made at start.
        self.driver: PolicyDriver | None = None
        #: ``serve --autoscale``: a ``gateway.autoscaling.LiveScaleDriver`` (None: fixed replicas).
        self.autoscaler: Any = None
        self._session: Any = None
        self._sweeper: asyncio.Task[None] | None = None
        self._call_listeners: list[Callable[[CallRecord], None]] = []
        #: The workflow profiler and its feed (None when ``profiler_enabled`` is off).
        self.learning: ProfilerFeed | None = ProfilerFeed(config, self.metrics) if config.profiler_enabled else None
        if self.learning is not None:
            self.add_call_listener(self.learning.on_call)
        self.bundle = bundle if bundle is not None else make_gateway_bundle(config, self.learning)
        self.router = self.bundle.router

    def add_call_listener(self, listener: Callable[[CallRecord], None]) -> None:
        """Also hand every finished call record to ``listener`` (e.g. the profiler).

        Called on the event loop, once per call, after the record is queued for the
        store; it must be quick and must not block. Its exceptions are logged, never raised.
        """
        self._call_listeners.append(listener)

    def record(self, record: CallRecord) -> None:
        assert self.store is not None
        self.store.record_call(record)
        for listener in self._call_listeners:
            try:
                listener(record)
            except Exception:  # a listener's bug must not fail a call
                log.exception("call listener %r failed", listener)

    async def start(self) -> None:
        self.store = Store(self.config.db_path, batch_rows=self.config.store_batch_rows,
                           flush_interval_s=self.config.store_flush_interval_s,
                           session_idle_timeout_s=self.config.session_idle_timeout_s)
        self._session = make_session(pool_size=self.config.upstream_pool_size,
                                     connect_timeout_s=self.config.upstream_connect_timeout_s,
                                     read_timeout_s=self.config.upstream_read_timeout_s)
        self.pool = ReplicaPool(self.backends, self._session, health_interval_s=self.config.health_interval_s,
                                health_timeout_s=self.config.health_timeout_s,
                                first_byte_timeout_s=self.config.upstream_first_byte_timeout_s,
                                read_timeout_s=self.config.upstream_read_timeout_s,
                                quarantine_base_s=self.config.quarantine_base_s,
                                quarantine_max_s=self.config.quarantine_max_s)
        self.driver = PolicyDriver(self.bundle, self.pool, self.config.block_size, KvEventHub())
        self.pool.on_ready = self.driver.replica_ready
        self.pool.on_down = self.driver.replica_down
        await self.pool.start()
        self.proxy = Proxy(self.config, self.pool, self.driver, self.record, self.metrics)
        if self.learning is not None:
            await self.learning.start()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_idle(), name="pythia-idle-sessions")

    async def _sweep_idle(self) -> None:
        """End the policies' view of sessions idle for ``session_idle_timeout_s``."""
        timeout_s = self.config.session_idle_timeout_s
        while True:
            await asyncio.sleep(min(max(timeout_s / 4, 0.05), 5.0))
            if self.driver is not None:
                try:
                    self.driver.end_idle_sessions(self.driver.now_s(), timeout_s)
                except Exception:  # a policy's bug must not stop the sweep
                    log.exception("ending idle sessions failed")

    async def stop(self) -> None:
        """Finish pending aborts, stop probing, close connections, flush and close the store."""
        await cancel_and_wait(self._sweeper)
        if self.proxy is not None:
            await self.proxy.drain_background()
        if self.autoscaler is not None:
            await self.autoscaler.stop()
        if self.driver is not None:
            await self.driver.stop()
        if self.learning is not None:
            await self.learning.stop()
        if self.pool is not None:
            await self.pool.stop()
        if self._session is not None:
            await self._session.close()
        if self.store is not None:
            await asyncio.to_thread(self.store.close)

    async def store_spans(self, records: Sequence[Any]) -> None:
        """OTLP sink: keep the spans; a finished root workflow span ends its session."""
        assert self.store is not None
        self.store.record_spans(records)
        for span in records:
            if span.ends_session:
                self.store.end_session(span.workflow, span.session, span.end_ns / 1e9)
                if self.learning is not None:
                    self.learning.end_session(span.workflow, span.session, span.end_ns / 1e9)
                if self.driver is not None and span.session:
                    self.driver.end_session(span.session, self.driver.policy_time(span.end_ns / 1e9))

    async def read(self, fn: Any, *args: Any) -> Any:
        """Run a store query off the event loop, after everything queued so far is written."""
        assert self.store is not None
        store = self.store

        def query() -> Any:
            store.flush()
            return fn(*args)

        return await asyncio.to_thread(query)


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def _proxy_route(route: str) -> Any:
    async def endpoint(request: Request) -> Response:
        proxy = _gateway(request).proxy
        assert proxy is not None
        return await proxy.handle(request, route)

    return endpoint


async def _models(request: Request) -> Response:
    pool = _gateway(request).pool
    assert pool is not None
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "pythia"} for m in sorted(pool.models())]
    return JSONResponse({"object": "list", "data": data})


async def _model(request: Request) -> Response:
    pool = _gateway(request).pool
    assert pool is not None
    model = request.path_params["model"]
    if model not in pool.models():
        raise NotFoundError(f"The model '{model}' does not exist", param="model", code="model_not_found")
    return JSONResponse({"id": model, "object": "model", "created": 0, "owned_by": "pythia"})


async def _health(request: Request) -> Response:
    gateway = _gateway(request)
    healthy = gateway.pool.healthy_count() if gateway.pool else 0
    body = {"status": "ok" if healthy else "unavailable", "replicas_healthy": healthy,
            "replicas": len(gateway.backends)}
    return JSONResponse(body, status_code=200 if healthy else 503)


async def _metrics(request: Request) -> Response:
    gateway = _gateway(request)
    if gateway.pool is not None:
        gateway.metrics.replicas_healthy.set(gateway.pool.healthy_count())
    if gateway.proxy is not None:
        gateway.metrics.inflight.set(gateway.proxy.inflight)
    return Response(gateway.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _limit(request: Request, default: int = 1000) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 0 < int(raw) <= _API_LIMIT_MAX:
        raise InvalidRequestError(f"'limit' must be an integer from 1 to {_API_LIMIT_MAX}", param="limit")
    return int(raw)


def _autoscaler(gateway: Gateway) -> dict[str, Any] | None:
    """The autoscaler's decisions for the report (None: fixed replicas)."""
    return gateway.autoscaler.describe() if gateway.autoscaler is not None else None


def _cache_actions(gateway: Gateway) -> dict[str, dict[str, Any]] | None:
    """Per workflow, the warms the policy driver sent and what came of them (None: no driver)."""
    if gateway.driver is None:
        return None
    return cache_action_summary(gateway.driver.cache_action_log())


async def _api_report(request: Request) -> Response:
    """The full report (docs/reports.md), with the profiler's view when it runs."""
    gateway = _gateway(request)
    assert gateway.store is not None
    store = gateway.store
    workflow = request.query_params.get("workflow")
    now_s = time.time()
    profiler = history = None
    if gateway.learning is not None:  # read on the loop, where the profiler lives; built in a thread
        profiler, history = frozen_profiler(gateway.learning, now_s)
    tag = "" if workflow == UNTAGGED else workflow  # the store's spelling of "untagged"
    actions = _cache_actions(gateway)
    report = await gateway.read(lambda: build_full_report(
        store.calls(tag), store.sessions(tag), workflow=workflow, profiler=profiler,
        history=history, cache_actions=actions, autoscaler=_autoscaler(gateway), now_s=now_s))
    if gateway.driver is not None:  # what each replica's SGLang lacks (docs/reports.md)
        report["replicas"] = gateway.driver.replica_features()
    return JSONResponse(report)


async def _api_workflows(request: Request) -> Response:
    learning = _gateway(request).learning
    if learning is None:
        return JSONResponse({"profiler": False, "workflows": []})
    snapshot = learning.snapshot()
    return JSONResponse({"profiler": True, "live_sessions": snapshot.live_sessions,
                         "dropped_observations": snapshot.dropped_observations,
                         "workflows": [workflow_summary(wf) for wf in snapshot.workflows]})


async def _api_workflow(request: Request) -> Response:
    name = request.path_params["name"]
    learning = _gateway(request).learning
    found = None
    if learning is not None:
        found = next((wf for wf in learning.snapshot().workflows if wf.workflow == name), None)
    if learning is None or found is None:
        why = "the profiler is off" if learning is None else "the profiler has not seen it"
        raise NotFoundError(f"no workflow type '{name}' ({why})", param="name", code="workflow_not_found")
    return JSONResponse(workflow_detail(found, learning.history.points(name)))


async def _api_sessions(request: Request) -> Response:
    gateway = _gateway(request)
    assert gateway.store is not None
    limit = _limit(request)
    rows = await gateway.read(gateway.store.sessions, request.query_params.get("workflow"))
    return JSONResponse({"sessions": [asdict(s) for s in rows[-limit:]]})


async def _api_calls(request: Request) -> Response:
    gateway = _gateway(request)
    assert gateway.store is not None
    params = request.query_params
    limit = _limit(request)
    store = gateway.store
    rows = await gateway.read(lambda: store.calls(params.get("workflow"), params.get("session"), limit, latest=True))
    calls = []
    for record in rows:
        row = asdict(record)
        row["prefix_blocks"] = len(row.pop("block_hashes"))
        calls.append(row)
    return JSONResponse({"calls": calls})


async def _api_replicas(request: Request) -> Response:
    gateway = _gateway(request)
    assert gateway.pool is not None
    policy = gateway.driver.describe() if gateway.driver is not None else None
    return JSONResponse({"replicas": [r.describe() for r in gateway.pool.replicas()], "policy": policy})


async def _pythia_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PythiaError)
    _gateway(request).metrics.errors.labels(exc.error_type).inc()
    return JSONResponse(exc.to_body(), status_code=exc.status_code)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    message = f"{request.method} {request.url.path}: {exc.detail}"
    _gateway(request).metrics.errors.labels(kind).inc()
    return JSONResponse(error_body(message, kind), status_code=exc.status_code, headers=exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error serving %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("internal error in the gateway", "internal_error"), status_code=500)


def _otlp_routes(gateway: Gateway) -> list[Route]:
    """``POST /v1/traces`` when H3's decoder is present; without it, no route."""
    try:
        from pythia_server.gateway.otlp import make_otlp_endpoint
    except ImportError:
        log.info("gateway/otlp.py not available: /v1/traces is not served")
        return []
    return [Route("/v1/traces", make_otlp_endpoint(gateway.store_spans), methods=["POST"])]


def _page_routes(gateway: Gateway) -> list[Mount]:
    """The live report pages under ``/pythia/`` (reports/pages.py), after the JSON API."""
    try:
        from pythia_server.reports.pages import make_store_pages
    except ImportError:
        log.info("reports/pages.py not available: no pages under /pythia/")
        return []
    learning = gateway.learning
    return [Mount("/pythia", app=make_store_pages(
        gateway.read, lambda: gateway.store,
        profiler=learning, history=learning.history if learning is not None else None,
        cache_actions=lambda: _cache_actions(gateway),
        autoscaler=lambda: _autoscaler(gateway),
        replicas=lambda: gateway.driver.replica_features() if gateway.driver is not None else None))]


def build_app(config: GatewayConfig, backends: Sequence[tuple[str, str]],
              bundle: PolicyBundle | None = None) -> Starlette:
    """The gateway over ``backends`` (replica id, base URL); started by the app's lifespan.

    ``bundle``: the policies to drive (default: ``make_policy(config.policy)``).
    """
    gateway = Gateway(config, backends, bundle)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    routes = [
        Route("/v1/chat/completions", _proxy_route("chat"), methods=["POST"]),
        Route("/v1/completions", _proxy_route("completions"), methods=["POST"]),
        Route("/generate", _proxy_route("generate"), methods=["POST"]),
        Route("/v1/models", _models, methods=["GET"]),
        Route("/v1/models/{model:path}", _model, methods=["GET"]),
        Route("/health", _health, methods=["GET"]),
        Route("/metrics", _metrics, methods=["GET"]),
        Route("/pythia/api/report", _api_report, methods=["GET"]),
        Route("/pythia/api/workflows", _api_workflows, methods=["GET"]),
        Route("/pythia/api/workflows/{name:path}", _api_workflow, methods=["GET"]),
        Route("/pythia/api/sessions", _api_sessions, methods=["GET"]),
        Route("/pythia/api/calls", _api_calls, methods=["GET"]),
        Route("/pythia/api/replicas", _api_replicas, methods=["GET"]),
        *_otlp_routes(gateway),
        *_page_routes(gateway),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        PythiaError: _pythia_error, HTTPException: _http_error, Exception: _unexpected_error})
    app.state.gateway = gateway
    return app
