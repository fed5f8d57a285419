"""The live driver of one LLM call: read, tag, route, forward, relay, record.

For each request the proxy reads and checks the body, reads the tags (malformed ones
dropped and counted), estimates prompt tokens and prefix block hashes, asks the router
for a replica over the pool's views, and forwards with an SGLang ``rid`` it chose. A
replica that cannot be reached is marked unhealthy and the call retried once on another
replica while nothing has been sent to the client. The first chunk of every answer is read
before anything is sent to the client, within the first-byte timeout: a replica that hangs
(no headers, or headers then silence) is quarantined and the call retried elsewhere, or
answered 504. A replica that stalls later (inter-chunk timeout) or answers garbage (a whole
answer that is not JSON) is quarantined too; that call ends in an error. Streams are relayed event by event as
they arrive; a non-streaming call is streamed from the replica too and its whole answer
assembled (``gateway/assemble.py``), so every call has a TTFT. Every routed call ends in exactly one :class:`CallRecord`, whether it
finished, failed or was abandoned by its client (then the engine request is aborted).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import Response

from pythia_sdk.protocol import parse_request
from pythia_server.config import GatewayConfig
from pythia_server.errors import (
    NotFoundError,
    OverloadedError,
    PythiaError,
    UpstreamError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from pythia_server.gateway.accounting import encode_event
from pythia_server.gateway.assemble import can_assemble, streaming_body
from pythia_server.gateway.client_io import (
    ClientGone,
    RelayResponse,
    unless_client_leaves,
)
from pythia_server.gateway.driver import PolicyDriver
from pythia_server.gateway.metrics import GatewayMetrics
from pythia_server.gateway.pool import ReplicaPool
from pythia_server.gateway.prompt_tokens import PromptTokenizer
from pythia_server.gateway.served_call import ServedCall, call_outcome, call_record
from pythia_server.gateway.upstream_stream import (
    collect_answer,
    read_usage,
    relay_events,
)
from pythia_server.gateway.validation import (
    ParsedRequest,
    parse_body,
    prompt_token_ids,
    read_body,
    validate,
)
from pythia_server.policy.types import CallInfo
from pythia_server.sglang_backend.client import (
    UpstreamResponse,
    build_generate_payload,
    build_openai_payload,
)
from pythia_server.store.records import CallRecord
from pythia_server.tokens import block_hashes

__all__ = ["Proxy"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_UPSTREAM_PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions", "generate": "/generate"}
_RETRYABLE_STATUS = (502, 503)


class Proxy:
    """Serves LLM calls over a replica pool; one instance per gateway."""

    def __init__(self, config: GatewayConfig, pool: ReplicaPool, driver: PolicyDriver,
                 record: Callable[[CallRecord], None], metrics: GatewayMetrics) -> None:
        self._config = config
        self._pool = pool
        self._driver = driver
        self._record = record
        self._metrics = metrics
        self._inflight = 0
        self._chat_tokenizer = PromptTokenizer()
        self._background: set[asyncio.Task[object]] = set()

    @property
    def inflight(self) -> int:
        return self._inflight

    async def handle(self, request: Request, route: str) -> Response:
        started, started_wall = time.perf_counter(), time.time()
        if self._inflight >= self._config.max_inflight_requests:
            raise OverloadedError(f"the gateway is serving {self._inflight} calls, its limit; retry later")
        body = parse_body(await read_body(request, self._config.max_body_bytes))
        parsed = validate(route, body)
        tags, hints, problems = parse_request(request.headers, body)
        if problems:
            self._metrics.count_problems(problems)
            log.debug("dropped malformed tags: %s", "; ".join(map(str, problems)))
        self._check_model(parsed)
        prompt_ids = prompt_token_ids(parsed, self._chat_tokenizer)
        call_id = f"pythia-{uuid.uuid4().hex}"
        hashes = tuple(block_hashes(prompt_ids, self._config.block_size))
        self._driver.remember_prompt(prompt_ids, hashes)
        info = CallInfo(call_id=call_id, tags=tags, prompt_tokens=len(prompt_ids), block_hashes=hashes,
                        max_tokens=parsed.max_tokens, hints=hints,
                        arrival_s=self._driver.policy_time(started_wall))
        call = ServedCall(call_id, parsed, tags, hints, info, started_wall, started,
                     assembled=(not parsed.stream and self._config.assemble_from_stream
                                and can_assemble(parsed.route, parsed.body)))
        self._inflight += 1
        try:
            upstream = await unless_client_leaves(request, self._send(call))
        except ClientGone:
            self._abandon(call, None)
            return Response(b"", status_code=499)
        except PythiaError as exc:
            self._finish(call, "error", exc.message)
            raise
        except BaseException:
            self._finish(call, "error", "gateway failure before the upstream answered")
            raise
        if call.assembled and upstream.status < 400 and upstream.content_type == "text/event-stream":
            return await self._answer_assembled(call, upstream, request)
        if upstream.status >= 400 or not parsed.stream:
            return await self._answer_whole(call, upstream, request)
        return RelayResponse(self._relay(call, upstream), lambda: self._close_stream(call, upstream))

    # -- routing and sending -------------------------------------------------------------

    def _check_model(self, parsed: ParsedRequest) -> None:
        if parsed.route == "generate" or parsed.model is None:
            return
        known = self._pool.models()
        if not known:
            raise UpstreamUnavailableError("no replica is available to serve models yet")
        if parsed.model not in known:
            raise NotFoundError(f"The model '{parsed.model}' does not exist; served: {', '.join(sorted(known))}",
                                param="model", code="model_not_found")

    async def _send(self, call: ServedCall) -> UpstreamResponse:
        parsed = call.parsed
        tried: list[str] = []
        last: PythiaError | None = None
        for _attempt in range(2):
            views = self._pool.views(exclude=tried, model=parsed.model if parsed.route != "generate" else None)
            if not views:
                break
            policy_now_s = self._driver.now_s()
            decision = self._driver.route(call.info, views, policy_now_s)
            replica = self._pool.get(decision.replica_id)
            tried.append(replica.replica_id)
            priority = self._driver.started(call.info, replica.replica_id, policy_now_s, first=_attempt == 0)
            session_id = self._driver.engine_session(call.info, replica.replica_id)
            body = streaming_body(parsed.body) if call.assembled else parsed.body
            if parsed.route == "generate":
                payload = build_generate_payload(body, rid=call.call_id, priority=priority, session_id=session_id)
            else:
                payload = build_openai_payload(body, rid=call.call_id, include_usage=parsed.stream or call.assembled,
                                               priority=priority, session_id=session_id)
            self._release(call)
            call.replica_id = replica.replica_id
            call.reserved_tokens = call.info.prompt_tokens + (parsed.max_tokens or 0)
            self._pool.begin(replica.replica_id, call.reserved_tokens)
            call.sent = time.perf_counter()
            try:
                response = await replica.client.post(_UPSTREAM_PATHS[parsed.route], payload)
            except UpstreamUnavailableError as exc:
                self._pool.mark_unhealthy(replica.replica_id, exc.message)
                last = exc
                self._metrics.retries.inc()
                continue
            except UpstreamTimeoutError as exc:
                self._quarantine(call, None, exc)
                last = exc
                self._metrics.retries.inc()
                continue
            if response.status in _RETRYABLE_STATUS and _attempt == 0:
                response.release()
                last = UpstreamUnavailableError(f"replica {replica.replica_id} answered {response.status}")
                self._metrics.retries.inc()
                continue
            if response.status < 400:
                try:
                    await response.start()  # the first byte: nothing has reached the client yet
                except UpstreamTimeoutError as exc:
                    self._quarantine(call, response, exc)
                    last = exc
                    self._metrics.retries.inc()
                    continue
                except UpstreamError as exc:  # broke off before its first byte: as if unreachable
                    response.close()
                    self._pool.mark_unhealthy(replica.replica_id, exc.message)
                    last = exc
                    self._metrics.retries.inc()
                    continue
                except BaseException:
                    response.close()
                    raise
            return response
        raise last or UpstreamUnavailableError("no healthy replica to serve the request")

    def _quarantine(self, call: ServedCall, upstream: UpstreamResponse | None, exc: PythiaError) -> None:
        """The replica hung or answered garbage: drop the request there and quarantine it."""
        if upstream is not None:
            upstream.close()
        if call.replica_id is None:
            return
        replica_id = call.replica_id
        backoff_s = self._pool.quarantine(replica_id, exc.message)
        log.warning("replica %s quarantined for %gs: %s (call %s)", replica_id, backoff_s, exc.message, call.call_id)
        self._metrics.quarantines.inc()
        try:
            replica = self._pool.get(replica_id)
        except KeyError:  # removed from the pool meanwhile (scale-down)
            return
        task = asyncio.get_running_loop().create_task(replica.client.abort_request(call.call_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _release(self, call: ServedCall) -> None:
        if call.replica_id is not None:
            self._pool.end(call.replica_id, call.reserved_tokens, ok=False)
            call.replica_id = None

    # -- answering -------------------------------------------------------------------------

    async def _answer_whole(self, call: ServedCall, upstream: UpstreamResponse, request: Request) -> Response:
        """Read the whole upstream answer, unless the client leaves first (then abort it)."""
        raw = await self._whole(call, upstream, request, upstream.read())
        if raw is None:
            return Response(b"", status_code=499)
        if upstream.status >= 400:
            self._finish(call, "error", f"replica answered {upstream.status}: {raw[:200].decode(errors='replace')}")
            return Response(raw, status_code=upstream.status, media_type=upstream.content_type or "application/json")
        try:
            data = json.loads(raw)
        except ValueError:
            garbage = UpstreamError("the replica answered with something that is not JSON")
            self._quarantine(call, None, garbage)
            self._finish(call, "error", garbage.message)
            raise garbage from None
        read_usage(call.parsed.route, data, call.usage)
        self._finish(call, "ok", None)
        return Response(raw, status_code=upstream.status, media_type="application/json")

    async def _answer_assembled(self, call: ServedCall, upstream: UpstreamResponse, request: Request) -> Response:
        """The non-streaming answer built from an upstream stream (TTFT taken on the way)."""
        body = await self._whole(call, upstream, request, collect_answer(call, upstream))
        if body is None:
            return Response(b"", status_code=499)
        upstream.release()
        self._finish(call, "ok", None)
        return Response(json.dumps(body, ensure_ascii=False).encode(), media_type="application/json")

    async def _whole(self, call: ServedCall, upstream: UpstreamResponse, request: Request,
                     work: Awaitable[T]) -> T | None:
        """``work``'s result (a whole answer); None when the client left first (the call is
        then abandoned and the engine request aborted). An upstream error ends the call."""
        try:
            return await unless_client_leaves(request, work)
        except ClientGone:
            self._abandon(call, upstream)
            return None
        except PythiaError as exc:
            upstream.close()
            if isinstance(exc, UpstreamTimeoutError):
                self._quarantine(call, upstream, exc)
            self._finish(call, "error", exc.message)
            raise
        except BaseException:  # the gateway itself is being cancelled (shutdown)
            self._abandon(call, upstream)
            raise

    async def _relay(self, call: ServedCall, upstream: UpstreamResponse) -> AsyncIterator[bytes]:
        """Forward the replica's stream (``relay_events``); a failure ends it with an error event."""
        try:
            async with contextlib.aclosing(relay_events(call, upstream)) as events:
                async for out in events:
                    yield out
        except UpstreamError as exc:
            if isinstance(exc, UpstreamTimeoutError):
                self._quarantine(call, upstream, exc)
            self._finish(call, "error", exc.message)
            yield encode_event(exc.to_body())
            return
        self._finish(call, "ok", None)

    def _close_stream(self, call: ServedCall, upstream: UpstreamResponse) -> None:
        """Runs when the relay ends however it ends; a call still open was abandoned."""
        if call.done:
            upstream.release()
            return
        self._abandon(call, upstream)

    def _abandon(self, call: ServedCall, upstream: UpstreamResponse | None) -> None:
        """The client left: drop the upstream connection, abort by rid, record ``aborted``."""
        if upstream is not None:
            upstream.close()  # drops the connection: the engine aborts the request
        replica = self._pool.get(call.replica_id) if call.replica_id else None
        if replica is not None:
            task = asyncio.get_running_loop().create_task(replica.client.abort_request(call.call_id))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        self._finish(call, "aborted", "the client disconnected before the response ended")

    # -- recording -------------------------------------------------------------------------

    def _finish(self, call: ServedCall, status: str, error: str | None) -> None:
        """Record the call once, release its reservation, tell the policies."""
        if call.done:
            return
        call.done = True
        call.status, call.error = status, error
        self._inflight -= 1
        now = time.perf_counter()
        if call.replica_id is not None:
            self._pool.end(call.replica_id, call.reserved_tokens, ok=status == "ok")
            self._tell_policies(call, now)
        record = call_record(call, now, self._config.block_size)
        try:
            self._record(record)
        except Exception:  # recording must never fail the call
            log.exception("could not record call %s", call.call_id)
        self._metrics.observe_call(route=record.route, workflow=record.workflow, status=status,
                                   prompt_tokens=record.prompt_tokens, cached_tokens=record.cached_tokens,
                                   output_tokens=record.output_tokens, ttft_ms=record.ttft_ms,
                                   e2e_ms=record.e2e_ms, queue_ms=record.queue_ms, agent=record.agent)

    def _tell_policies(self, call: ServedCall, now: float) -> None:
        outcome = call_outcome(call, now, self._driver.policy_time)
        try:
            self._driver.finished(outcome, outcome.finished_s)
        except Exception:  # a policy's bug must not fail the call
            log.exception("policies failed on the outcome of %s", call.call_id)

    async def drain_background(self) -> None:
        """Wait for pending abort requests (at shutdown)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
