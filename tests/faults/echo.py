"""An asyncio echo server on 127.0.0.1 for the chaos-proxy tests: what it reads it writes
back, passes a half-close on, and stops with every connection closed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Iterator

from phalanx.faults.chaos.loop_thread import LoopThread


class Echo:
    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        return "127.0.0.1", int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._echo, "127.0.0.1", 0)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
        except OSError:
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


@contextlib.contextmanager
def echo_in_thread() -> Iterator[tuple[str, int]]:
    """An echo server on a loop of its own; yields its address."""
    echo = Echo()
    with LoopThread(name="echo") as thread:
        thread.run(echo.start(), timeout=5)
        try:
            yield echo.address
        finally:
            thread.run(echo.stop(), timeout=10)


def connect(port: int, *, timeout: float = 5.0) -> socket.socket:
    """A blocking client socket whose every read and write waits at most ``timeout``."""
    client = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    client.settimeout(timeout)
    return client


def read_to_end(client: socket.socket, *, limit: int) -> bytes:
    """Read until EOF (or ``limit`` bytes, so a wrong stream cannot loop for ever)."""
    parts: list[bytes] = []
    received = 0
    while received <= limit and (data := client.recv(65536)):
        parts.append(data)
        received += len(data)
    return b"".join(parts)


def read_exactly(client: socket.socket, size: int) -> bytes:
    parts: list[bytes] = []
    while size > 0 and (data := client.recv(size)):
        parts.append(data)
        size -= len(data)
    return b"".join(parts)


def open_fds() -> set[str]:
    """This process's open file descriptors (empty where /proc is missing)."""
    return set(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else set()
