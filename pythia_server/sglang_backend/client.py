"""The gateway's client for SGLang's HTTP API (real SGLang or the simulated engine).

Payloads are built by pure functions (``build_*``) so contract tests can validate them
against SGLang's own request models without any I/O. :class:`SGLangClient` sends them
over a shared, pooled ``aiohttp`` session (measured about 5x cheaper per request than
httpx here) and translates aiohttp's errors into :mod:`pythia_server.errors` at this
boundary: connection refused -> :class:`UpstreamUnavailableError`, a timeout ->
:class:`UpstreamTimeoutError`, anything else broken -> :class:`UpstreamError`.
"""

from __future__ import annotations

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


def build_openai_payload(body: Mapping[str, Any], *, rid: str, include_usage: bool,
                         priority: int | None = None) -> dict[str, Any]:
    """The body sent to a replica's ``/v1/chat/completions`` or ``/v1/completions``.

    ``nvext`` is stripped; ``rid`` (SGLang's request id, so ``/abort_request`` can name
    it) is set; a streaming request asks for ``stream_options.include_usage`` so token
    counts are known; ``priority`` is SGLang's field (only with priority scheduling on).
    """
    payload = {k: v for k, v in body.items() if k not in _GATEWAY_ONLY_KEYS}
    payload["rid"] = rid
    if payload.get("stream") and include_usage:
        options = dict(payload.get("stream_options") or {})
        options["include_usage"] = True
        payload["stream_options"] = options
    if priority is not None:
        payload["priority"] = priority
    return payload


def build_generate_payload(body: Mapping[str, Any], *, rid: str,
                           priority: int | None = None) -> dict[str, Any]:
    """The body sent to a replica's native ``/generate`` (``nvext`` stripped, ``rid`` set)."""
    payload = {k: v for k, v in body.items() if k not in _GATEWAY_ONLY_KEYS}
    payload["rid"] = rid
    if priority is not None:
        payload["priority"] = priority
    return payload


def build_warm_payload(input_ids: Sequence[int], *, rid: str, priority: int | None = None) -> dict[str, Any]:
    """A prefill-only ``/generate`` request: the prompt enters the radix cache, nothing is decoded.

    SGLang 0.5 accepts ``max_new_tokens: 0`` for exactly this; used to warm a prefix on
    the replica that will serve the predicted next call.
    """
    payload: dict[str, Any] = {"input_ids": list(input_ids), "sampling_params": {"max_new_tokens": 0}, "rid": rid}
    if priority is not None:
        payload["priority"] = priority
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
    connector = aiohttp.TCPConnector(limit=pool_size, limit_per_host=pool_size, ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout_s, sock_read=read_timeout_s)
    return aiohttp.ClientSession(connector=connector, timeout=timeout,
                                 json_serialize=lambda o: json.dumps(o, separators=(",", ":")),
                                 auto_decompress=True)


@dataclass(slots=True)
class UpstreamResponse:
    """An open upstream response: status and headers known, body not yet read."""

    status: int
    content_type: str
    _response: aiohttp.ClientResponse

    async def read(self) -> bytes:
        """The whole body; the connection goes back to the pool."""
        try:
            return await self._response.read()
        except TimeoutError as exc:
            raise UpstreamTimeoutError("the replica did not finish its response in time") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"the replica's response broke off: {exc}") from exc
        finally:
            self._response.release()

    async def read_json(self) -> Any:
        raw = await self.read()
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise UpstreamError("the replica answered with something that is not JSON") from exc

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive."""
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except TimeoutError as exc:
            raise UpstreamTimeoutError("the replica stalled mid-stream") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"the replica's stream broke off: {exc}") from exc

    def close(self) -> None:
        """Drop the connection (on the engine, this aborts a request still running)."""
        self._response.close()

    def release(self) -> None:
        self._response.release()


class SGLangClient:
    """One replica's HTTP API. Cheap to create; the session is shared and owned elsewhere."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession, *,
                 probe_timeout_s: float = 2.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._probe_timeout = aiohttp.ClientTimeout(total=probe_timeout_s)

    async def post(self, path: str, payload: Mapping[str, Any],
                   headers: Mapping[str, str] | None = None) -> UpstreamResponse:
        """Send ``payload`` and return once the status line and headers are in."""
        url = self.base_url + path
        try:
            response = await self._session.post(url, json=payload, headers=headers)
        except TimeoutError as exc:
            raise UpstreamTimeoutError(f"replica {self.base_url} did not answer in time") from exc
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError) as exc:
            raise UpstreamUnavailableError(f"replica {self.base_url} is unreachable: {exc}") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"replica {self.base_url} failed: {exc}") from exc
        return UpstreamResponse(response.status, response.content_type, response)

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

    async def server_info(self) -> Any:
        return await self._get_json("/server_info")

    async def flush_cache(self) -> bool:
        response = await self.post("/flush_cache", {})
        response.release()
        return response.status == 200

    async def warm(self, input_ids: Sequence[int], *, rid: str, priority: int | None = None) -> bool:
        """Send a prefill-only request and wait for it (True when the engine accepted it)."""
        try:
            response = await self.post("/generate", build_warm_payload(input_ids, rid=rid, priority=priority))
            await response.read()
        except UpstreamError:
            return False
        return response.status == 200

    async def close_session(self, session_id: str) -> bool:
        """Tell the engine a session is over (best effort: False when it could not be told)."""
        try:
            response = await self.post("/close_session", build_close_session_payload(session_id))
        except UpstreamError:
            return False
        response.release()
        return response.status == 200

    async def abort_request(self, rid: str) -> bool:
        """Ask the engine to drop ``rid`` (best effort: False when it could not be told)."""
        try:
            response = await self.post("/abort_request", build_abort_payload(rid))
        except UpstreamError:
            return False
        response.release()
        return response.status == 200
