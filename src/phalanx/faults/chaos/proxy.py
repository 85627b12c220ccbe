"""``ChaosProxy``: a TCP proxy on loopback that injects network faults between real peers.

It sits between gRPC clients and the coordinator in the chaos tests, so it forwards opaque
byte streams (HTTP/2 included) full duplex and parses nothing: every fault acts on bytes,
as a broken network would. Faults switch at run time from the proxy's own event loop or,
thread-safely, from any other thread (a test driving blocking clients); actions that touch
sockets are handed to the loop and waited for, bounded.

Run it inside an event loop (``async with ChaosProxy(...)``) or in a thread of its own
(``with ChaosProxy.start_in_thread(...)``). ``stop`` cancels every task and closes every
socket before it returns, so a test that stops it leaks nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TypeVar

from phalanx.errors import RuntimeBackendError
from phalanx.faults.chaos.control import Control, ProxyStats
from phalanx.faults.chaos.faults import BOTH, Direction, Fault
from phalanx.faults.chaos.link import Connection, abort, close
from phalanx.faults.chaos.loop_thread import LoopThread

T = TypeVar("T")

CONTROL_TIMEOUT = 5.0  # seconds a thread waits for the loop to carry out a control action
STOP_TIMEOUT = 5.0  # seconds stop() waits for connection tasks after cancelling them
ACCEPT_TURNS = 5  # loop turns between accept() and the handler's first step


class ChaosProxy:
    """Listens on ``host:port`` (0: the OS picks) and forwards each connection upstream."""

    def __init__(
        self, upstream: tuple[str, int], *, host: str = "127.0.0.1", port: int = 0,
        connect_timeout: float = 5.0,
    ) -> None:  # fmt: skip
        self.upstream = upstream
        self._host, self._port = host, port
        self._connect_timeout = connect_timeout
        self._control = Control()
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._links: dict[int, Connection] = {}
        self._closing = False

    @property
    def port(self) -> int:
        """The port clients connect to (the one the OS picked when asked for 0)."""
        if self._server is None:
            raise RuntimeBackendError("the chaos proxy is not running: start it first")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def address(self) -> str:
        """``host:port`` for a client's ``--server`` option."""
        return f"{self._host}:{self.port}"

    # --- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            self._server = await asyncio.start_server(self._handle, self._host, self._port)
        except OSError as error:
            raise RuntimeBackendError(
                f"the chaos proxy cannot listen on {self._host}:{self._port}: {error}"
            ) from error

    async def stop(self) -> None:
        """Stop listening, reset every connection and wait (bounded) for their tasks."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for _ in range(ACCEPT_TURNS):  # connections accepted just before the close
            await asyncio.sleep(0)
        for link in list(self._links.values()):
            link.abort()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_TIMEOUT)

    async def __aenter__(self) -> ChaosProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @classmethod
    @contextlib.contextmanager
    def start_in_thread(
        cls, upstream: tuple[str, int], *, host: str = "127.0.0.1", port: int = 0
    ) -> Iterator[ChaosProxy]:
        """Run a proxy on an event loop in a daemon thread, for tests with blocking clients."""
        proxy = cls(upstream, host=host, port=port)
        with LoopThread(name="chaos-proxy") as thread:
            thread.run(proxy.start(), timeout=CONTROL_TIMEOUT)
            try:
                yield proxy
            finally:
                thread.run(proxy.stop(), timeout=STOP_TIMEOUT + CONTROL_TIMEOUT)

    # --- control (any thread) --------------------------------------------------------------

    def set_fault(
        self, fault: Fault, *, direction: Direction | None = None, connection: int | None = None
    ) -> None:
        """Make ``fault`` act on one direction (both when None) of one connection (every
        connection, present and future, when None). A connection's own fault wins."""
        self._control.set(fault, BOTH if direction is None else (direction,), connection)

    def heal(self, *, connection: int | None = None) -> None:
        """Back to clean forwarding: for one connection, or everywhere (refusal included)."""
        self._control.heal(connection)

    def refuse(self, on: bool = True) -> None:
        """Reset new connections as soon as they are accepted (live ones are untouched)."""
        self._control.refuse(on)

    def reset(self, *, connection: int | None = None) -> int:
        """Reset live connections (one, or all) with an RST now; returns how many."""
        return self._in_loop(lambda: self._reset_now(connection))

    def connections(self) -> list[int]:
        """Identifiers of the live connections, in the order they were accepted."""
        return self._control.live()

    def stats(self) -> ProxyStats:
        return self._control.stats()

    # --- inside the loop -------------------------------------------------------------------

    def _reset_now(self, connection: int | None) -> int:
        """Every accepted connection is reset, its upstream link open or still opening (its
        task's cancellation aborts the client's socket there): a reset right after a client
        connected used to find nothing while the link was being opened."""
        chosen = [i for i in self._tasks if connection is None or i == connection]
        for ident in chosen:
            link = self._links.get(ident)
            if link is not None:
                link.abort()
            self._tasks[ident].cancel()
        self._control.event("reset", len(chosen))
        return len(chosen)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ident = next(self._ids)
        task = asyncio.current_task()
        if task is not None:
            self._tasks[ident] = task
        try:
            if self._closing or not self._control.admit(ident):
                await close((writer,), reset=True)
                return
            await self._serve(ident, reader, writer)
        except asyncio.CancelledError:
            # The proxy cancelled this connection (a reset, or stop): the task ends normally,
            # because asyncio.streams' done callback on Python 3.11 calls task.exception() on
            # a cancelled task and logs the CancelledError as "Exception in callback".
            return
        finally:
            self._tasks.pop(ident, None)
            self._control.closed(ident)

    async def _serve(
        self, ident: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            async with asyncio.timeout(self._connect_timeout):
                upstream = await asyncio.open_connection(*self.upstream)
        except (OSError, TimeoutError):
            self._control.event("upstream_failed")
            await close((writer,), reset=True)
            return
        except asyncio.CancelledError:
            abort(writer)
            raise
        self._links[ident] = link = Connection(ident, (reader, writer), upstream, self._control)
        try:
            await link.run()
        finally:
            del self._links[ident]

    def _in_loop(self, action: Callable[[], T]) -> T:
        """Run ``action`` on the proxy's loop: directly from its own thread, else handed over
        and waited for, since sockets belong to the loop that opened them."""
        if self._loop is None:
            raise RuntimeBackendError("the chaos proxy is not running: start it first")
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            return action()

        async def call() -> T:
            return action()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(CONTROL_TIMEOUT)
