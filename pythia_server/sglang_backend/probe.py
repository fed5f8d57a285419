"""Readiness and liveness probes for SGLang-API servers (real or simulated).

Ready: `GET /ready` answers 200 (SGLang 0.5: the tokenizer manager is ready; a 404 means
the server has no such route) and `GET /health` answers 200 (SGLang answers 503 while
starting and while shutting down). Healthy: `GET /health` answers 200 within the timeout.
SGLang's `/health` runs a one-token generation by default and waits up to
`SGLANG_HEALTH_CHECK_TIMEOUT` (20 s) for it, hence the generous default timeout. A server
answering garbage or hanging fails the probe; the supervisor turns repeated failures
into UNHEALTHY.
"""

from __future__ import annotations

from typing import Protocol

import aiohttp


class Probe(Protocol):
    async def ready(self, url: str) -> bool: ...

    async def healthy(self, url: str) -> bool: ...

    async def close(self) -> None: ...


class HttpProbe:
    """Probes over one pooled aiohttp session, created on first use inside the running loop."""

    def __init__(self, timeout_s: float = 25.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def ready(self, url: str) -> bool:
        if await self._status(url, "/ready") not in (200, 404, 405):
            return False
        return await self._status(url, "/health") == 200

    async def healthy(self, url: str) -> bool:
        return await self._status(url, "/health") == 200

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _status(self, url: str, path: str) -> int | None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.get(url + path, allow_redirects=False) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return None
