"""The client's side of a call: noticing it leave, and ending a relayed stream cleanly.

A client that gives up must not keep its request running on the engine: non-streaming
answers race the client's disconnect, and a relayed stream runs its close hook however
the ASGI call ends (finished, broken off, cancelled).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

__all__ = ["ClientGone", "RelayResponse", "unless_client_leaves"]

T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def client_gone(request: Request) -> None:
    """Returns when the client disconnects (its body has been read: nothing else arrives)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result, or :class:`ClientGone` (with ``work`` cancelled) if the client leaves first.

    A non-streaming answer comes whole, so without this a client that gave up would
    keep its request running on the engine to the end.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(client_gone(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    raise ClientGone


class RelayResponse(StreamingResponse):
    """A streaming response that runs ``on_close`` however the ASGI call ends."""

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()
