"""A grpc.aio server on its own event loop in a thread, for tests that call it with grpc's
blocking client (as the coordinator's server runs on the engine's loop)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import grpc

T = TypeVar("T")


class LoopThread:
    """An event loop running in a daemon thread; ``run`` a coroutine on it and wait."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="aio-test", daemon=True)
        self._thread.start()

    def run(self, coroutine: Awaitable[T], timeout: float = 10) -> T:
        async def wrapped() -> T:
            return await coroutine

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(timeout=timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@contextmanager
def serving(
    build: Callable[[], grpc.aio.Server], bind: Callable[[grpc.aio.Server], int]
) -> Iterator[tuple[LoopThread, int]]:
    """Build a server on the loop's thread, bind it (``bind`` returns the port), start it,
    and stop it on exit."""
    loop = LoopThread()

    async def start() -> tuple[grpc.aio.Server, int]:
        server = build()
        port = bind(server)
        await server.start()
        return server, port

    server, port = loop.run(start())
    try:
        yield loop, port
    finally:
        loop.run(server.stop(grace=0.5))
        loop.close()
