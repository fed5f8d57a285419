"""The gateway's client for SGLang's HTTP API (real SGLang or the simulated engine).

Payloads are built by pure functions (``build_*``) so contract tests can validate them
against SGLang's own request models without any I/O. :class:`SGLangClient` sends them
over a shared, pooled ``aiohttp`` session (measured about 5x cheaper per request than
httpx here) and translates aiohttp's errors into :mod:`pythia_server.errors` at this
boundary: connection refused -> :class:`UpstreamUnavailableError`, a timeout ->
:class:`UpstreamTimeoutError`, anything else broken -> :class:`UpstreamError`.

Two upstream timeouts catch a replica that hangs: the *first-byte* timeout bounds the wait
from sending a request to the first byte of its answer's body (headers alone do not count:
SGLang sends a stream's headers at once, before prefill), and the *inter-chunk* timeout
bounds each silence after that. A client built without them leaves both to the session's
own ``sock_read`` timeout.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from pythia_server.errors import (
    UpstreamError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from pythia_server.sglang_backend.prometheus_load import parse_load_metrics

__all__ = [
    "SGLangClient",
    "UpstreamResponse",
    "build_abort_payload",
    "build_close_session_payload",
    "build_generate_payload",
    "build_openai_payload",
    "build_warm_payload",
    "make_session",
]

#: Body keys the gateway consumes and never forwards.
_GATEWAY_ONLY_KEYS = ("nvext",)


def _set_session(payload: dict[str, Any], session_id: str | None) -> None:
    """SGLang's top-level ``session_id`` (0.5.23 ``GenerateReqInput``, ``ChatCompletionRequest``,
    ``CompletionRequest``): with ``--enable-session-radix-cache`` the request's KV is tagged
    with the session and held until ``/close_session``; the prompt is sent whole and used as
    is. A caller's own ``session_id`` or ``session_params`` wins (SGLang refuses both set).
    """
    if session_id and "session_id" not in payload and "session_params" not in payload:
        payload["session_id"] = session_id


def build_openai_payload(body: Mapping[str, Any], *, rid: str, include_usage: bool,
                         priority: int | None = None, session_id: str | None = None) -> dict[str, Any]:
    """The body sent to a replica's ``/v1/chat/completions`` or ``/v1/completions``.

    ``nvext`` is stripped; ``rid`` (SGLang's request id, so ``/abort_request`` can name
    it) is set; a streaming request asks for ``stream_options.include_usage`` so token
    counts are known; ``priority`` is SGLang's field (only with priority scheduling on);
    ``session_id`` only to replicas running the session radix cache (see ``_set_session``).
    """
    payload = {k: v for k, v in body.items() if k not in _GATEWAY_ONLY_KEYS}
    payload["rid"] = rid
    if payload.get("stream") and include_usage:
        options = dict(payload.get("stream_options") or {})
        options["include_usage"] = True
        payload["stream_options"] = options
    if priority is not None:
        payload["priority"] = priority
    _set_session(payload, session_id)
    return payload


def build_generate_payload(body: Mapping[str, Any], *, rid: str, priority: int | None = None,
                           session_id: str | None = None) -> dict[str, Any]:
    """The body sent to a replica's native ``/generate`` (``nvext`` stripped, ``rid`` set)."""
    payload = {k: v for k, v in body.items() if k not in _GATEWAY_ONLY_KEYS}
    payload["rid"] = rid
    if priority is not None:
        payload["priority"] = priority
    _set_session(payload, session_id)
    return payload


def build_warm_payload(input_ids: Sequence[int], *, rid: str, priority: int | None = None,
                       session_id: str | None = None) -> dict[str, Any]:
    """A prefill-only ``/generate`` request: the prompt enters the radix cache, nothing is decoded.

    SGLang 0.5 accepts ``max_new_tokens: 0`` for exactly this; used to warm a prefix on
    the replica that will serve the predicted next call.
    """
    payload: dict[str, Any] = {"input_ids": list(input_ids), "sampling_params": {"max_new_tokens": 0}, "rid": rid}
    if priority is not None:
        payload["priority"] = priority
    _set_session(payload, session_id)
    return payload


def build_abort_payload(rid: str) -> dict[str, Any]:
    """SGLang's ``/abort_request`` body for one request."""
    return {"rid": rid}


def build_close_session_payload(session_id: str) -> dict[str, Any]:
    """SGLang's ``/close_session`` body: the session's KV stops being held for it."""
    return {"session_id": session_id}


def make_session(*, pool_size: int = 256, connect_timeout_s: float = 5.0,
                 read_timeout_s: float = 300.0) -> aiohttp.ClientSession:
    """One pooled session for all replicas (call inside a running event loop)."""
    # Idle connections are dropped after 4 s, before uvicorn's 5 s keep-alive (SGLang's and the
    # sim's server) closes them: aiohttp's 15 s default reused connections the server was
    # closing, and the call failed with "Can not write request body".
    connector = aiohttp.TCPConnector(limit=pool_size, limit_per_host=pool_size, ttl_dns_cache=300,
                                     keepalive_timeout=4.0)
    timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout_s, sock_read=read_timeout_s)
    return aiohttp.ClientSession(connector=connector, timeout=timeout,
                                 json_serialize=lambda o: json.dumps(o, separators=(",", ":")),
                                 auto_decompress=True)


@dataclass(slots=True)
class UpstreamResponse:
    """An open upstream response: status and headers known, body not yet read.

    ``first_byte_deadline`` (event-loop time) bounds the wait for the body's first chunk,
    ``read_timeout_s`` each later wait (None: no bound of ours). :meth:`start` reads the
    first chunk early, so a hung replica is found before anything reaches the client.

    One watchdog timer per response enforces both: a read only notes when it started
    waiting, and the timer (re-armed when it fires early) cancels a read past its deadline.
    (An ``asyncio.timeout`` per chunk cost ~5 us a chunk here; reading through this,
    generators included, costs ~1.6 us a chunk against ~0.2 us for a bare ``readany``.)
    """

    status: int
    content_type: str
    _response: aiohttp.ClientResponse
    first_byte_deadline: float | None = None
    read_timeout_s: float | None = None
    _first: bytes | None = None
    _started: bool = False
    _done: bool = False
    _reader: asyncio.Task[Any] | None = None  # the task waiting for a chunk now
    _wait_since: float = 0.0
    _watchdog: asyncio.TimerHandle | None = None
    _fired: bool = False

    def _deadline(self) -> float | None:
        if not self._started:
            return self.first_byte_deadline
        return None if self.read_timeout_s is None else self._wait_since + self.read_timeout_s

    def _check(self) -> None:
        """The watchdog: cancel a read past its deadline, else come back at the deadline."""
        self._watchdog = None
        if self._done:
            return
        loop = asyncio.get_running_loop()
        if self._reader is None:  # not reading (the consumer is busy): look again later
            if self.read_timeout_s is not None:
                self._watchdog = loop.call_at(loop.time() + self.read_timeout_s, self._check)
            return
        deadline = self._deadline()
        if deadline is None:
            return
        if loop.time() >= deadline:
            self._fired = True
            self._reader.cancel()
        else:
            self._watchdog = loop.call_at(deadline, self._check)

    async def _next_chunk(self) -> bytes | None:
        """The next body chunk within its timeout (None at the end of the body)."""
        loop = asyncio.get_running_loop()
        self._wait_since = loop.time()
        if self._watchdog is None:
            deadline = self._deadline()
            if deadline is not None:
                self._watchdog = loop.call_at(deadline, self._check)
        task = self._reader = asyncio.current_task()
        try:
            chunk = await self._response.content.readany()
        except asyncio.CancelledError:
            if self._fired and task is not None and task.uncancel() == 0:
                self._fired = False
                self._finish()
                raise UpstreamTimeoutError("the replica stalled mid-answer" if self._started
                                           else "the replica sent no answer in time") from None
            raise
        except TimeoutError as exc:  # the session's own sock_read, when this client sets no timeouts
            self._finish()
            raise UpstreamTimeoutError("the replica stalled mid-answer") from exc
        except aiohttp.ClientError as exc:
            self._finish()
            raise UpstreamError(f"the replica's answer broke off: {exc}") from exc
        finally:
            self._reader = None
        self._started = True
        if not chunk:
            self._finish()
            return None
        return chunk

    def _finish(self) -> None:
        self._done = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    async def start(self) -> None:
        """Wait for the body's first chunk (within the first-byte timeout) and keep it."""
        if not self._started:
            self._first = await self._next_chunk()

    async def read(self) -> bytes:
        """The whole body; the connection goes back to the pool."""
        try:
            return b"".join([chunk async for chunk in self.iter_chunks()])
        finally:
            self.release()

    async def read_json(self) -> Any:
        raw = await self.read()
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise UpstreamError("the replica answered with something that is not JSON") from exc

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive (each read bounded by the timeouts)."""
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        while True:
            chunk = await self._next_chunk()
            if chunk is None:
                return
            yield chunk

    def close(self) -> None:
        """Drop the connection (on the engine, this aborts a request still running)."""
        self._finish()
        self._response.close()

    def release(self) -> None:
        self._finish()
        self._response.release()


class SGLangClient:
    """One replica's HTTP API. Cheap to create; the session is shared and owned elsewhere.

    ``first_byte_timeout_s`` / ``read_timeout_s``: see the module docstring; when given,
    they replace the session's ``sock_read`` for :meth:`post`.
    """

    def __init__(self, base_url: str, session: aiohttp.ClientSession, *,
                 probe_timeout_s: float = 2.0, first_byte_timeout_s: float | None = None,
                 read_timeout_s: float | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._probe_timeout = aiohttp.ClientTimeout(total=probe_timeout_s)
        self.first_byte_timeout_s = first_byte_timeout_s
        self.read_timeout_s = read_timeout_s
        self._post_timeout: aiohttp.ClientTimeout | None = None
        if first_byte_timeout_s is not None or read_timeout_s is not None:
            self._post_timeout = aiohttp.ClientTimeout(total=None, connect=session.timeout.connect, sock_read=None)

    async def post(self, path: str, payload: Mapping[str, Any],
                   headers: Mapping[str, str] | None = None) -> UpstreamResponse:
        """Send ``payload`` and return once the status line and headers are in."""
        url = self.base_url + path
        deadline = None
        if self.first_byte_timeout_s is not None:
            deadline = asyncio.get_running_loop().time() + self.first_byte_timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                if self._post_timeout is None:
                    response = await self._session.post(url, json=payload, headers=headers)
                else:
                    response = await self._session.post(url, json=payload, headers=headers,
                                                        timeout=self._post_timeout)
        except TimeoutError as exc:
            raise UpstreamTimeoutError(f"replica {self.base_url} did not answer in time") from exc
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError) as exc:
            raise UpstreamUnavailableError(f"replica {self.base_url} is unreachable: {exc}") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"replica {self.base_url} failed: {exc}") from exc
        return UpstreamResponse(response.status, response.content_type, response,
                                first_byte_deadline=deadline, read_timeout_s=self.read_timeout_s)

    async def _get_json(self, path: str) -> Any:
        try:
            async with self._session.get(self.base_url + path, timeout=self._probe_timeout) as response:
                if response.status != 200:
                    raise UpstreamError(f"GET {path} on {self.base_url} returned {response.status}")
                return await response.json(content_type=None)
        except TimeoutError as exc:
            raise UpstreamTimeoutError(f"GET {path} on {self.base_url} timed out") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailableError(f"GET {path} on {self.base_url} failed: {exc}") from exc
        except ValueError as exc:
            raise UpstreamError(f"GET {path} on {self.base_url} did not return JSON") from exc

    async def health(self) -> bool:
        """True when ``/health`` answers 200 within the probe timeout."""
        try:
            async with self._session.get(self.base_url + "/health", timeout=self._probe_timeout) as response:
                await response.read()
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def models(self) -> list[str]:
        """Model ids served (OpenAI ``/v1/models``)."""
        data = await self._get_json("/v1/models")
        entries = data.get("data") if isinstance(data, Mapping) else None
        return [str(m["id"]) for m in entries or () if isinstance(m, Mapping) and "id" in m]

    async def loads(self) -> Any:
        """SGLang's ``/v1/loads`` as returned (per-rank load), for the scheduler's view."""
        return await self._get_json("/v1/loads")

    async def load_metrics(self) -> dict[str, int]:
        """The load gauges of SGLang's Prometheus ``/metrics`` (``--enable-metrics``), summed
        over ranks and named like ``/v1/loads`` fields: the fallback where that is missing."""
        try:
            async with self._session.get(self.base_url + "/metrics", timeout=self._probe_timeout) as response:
                if response.status != 200:
                    raise UpstreamError(f"GET /metrics on {self.base_url} returned {response.status}")
                text = await response.text(errors="replace")
        except TimeoutError as exc:
            raise UpstreamTimeoutError(f"GET /metrics on {self.base_url} timed out") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailableError(f"GET /metrics on {self.base_url} failed: {exc}") from exc
        return parse_load_metrics(text)

    async def server_info(self) -> Any:
        return await self._get_json("/server_info")

    async def flush_cache(self) -> bool:
        response = await self.post("/flush_cache", {})
        response.release()
        return response.status == 200

    async def warm(self, input_ids: Sequence[int], *, rid: str, priority: int | None = None,
                   session_id: str | None = None) -> bool:
        """Send a prefill-only request and wait for it (True when the engine accepted it)."""
        try:
            response = await self.post("/generate", build_warm_payload(input_ids, rid=rid, priority=priority,
                                                                       session_id=session_id))
            await response.read()
        except UpstreamError:
            return False
        return response.status == 200

    async def _control(self, path: str, payload: Mapping[str, Any]) -> bool:
        """A best-effort control call, bounded by the probe timeout (a hung replica must not
        hold an abort, or the gateway's shutdown waiting for it, for a whole first-byte timeout)."""
        try:
            async with asyncio.timeout(self._probe_timeout.total):
                response = await self.post(path, payload)
        except (UpstreamError, TimeoutError):
            return False
        response.release()
        return response.status == 200

    async def close_session(self, session_id: str) -> bool:
        """Tell the engine a session is over (best effort: False when it could not be told)."""
        return await self._control("/close_session", build_close_session_payload(session_id))

    async def abort_request(self, rid: str) -> bool:
        """Ask the engine to drop ``rid`` (best effort: False when it could not be told)."""
        return await self._control("/abort_request", build_abort_payload(rid))
