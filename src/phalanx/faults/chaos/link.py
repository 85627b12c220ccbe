"""One proxied connection: a pipe per direction, each a reader task filling a bounded queue
and a writer task that applies the fault acting at that moment.

Reading and writing are separate tasks so that a delay adds latency without stalling the
reader (a reader that slept per chunk would also cut throughput to one chunk per delay), and
so that a blackhole keeps draining the sender. The queue is bounded: when the writer cannot
keep up (slow peer, bandwidth limit) the reader stops reading and TCP pushes back on the
sender, so the proxy holds at most ``QUEUE_CHUNKS * CHUNK`` bytes per direction.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct

import numpy as np

from phalanx.faults.chaos.control import Control
from phalanx.faults.chaos.faults import (
    Bandwidth,
    Blackhole,
    Delay,
    Direction,
    Fault,
    Flip,
    ResetAfter,
    Truncate,
)

CHUNK = 64 * 1024
QUEUE_CHUNKS = 16
CLOSE_TIMEOUT = 2.0  # seconds a clean close may spend flushing before it turns into an RST

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class CutError(Exception):
    """A pipe ends its whole connection: cleanly (truncate) or with an RST (reset)."""

    def __init__(self, *, reset: bool) -> None:
        super().__init__("reset" if reset else "truncated")
        self.reset = reset


def flip_chunk(chunk: bytes, rate: float, rng: np.random.Generator) -> tuple[bytes, int]:
    """``chunk`` with one random bit flipped in each byte hit with probability ``rate``;
    returns the damaged bytes and how many were hit."""
    data = np.frombuffer(chunk, dtype=np.uint8).copy()
    hit = np.flatnonzero(rng.random(data.size) < rate)
    data[hit] ^= np.left_shift(1, rng.integers(0, 8, size=hit.size)).astype(np.uint8)
    return data.tobytes(), int(hit.size)


def abort(writer: asyncio.StreamWriter) -> None:
    """Close at once with an RST (SO_LINGER 0), dropping anything still buffered."""
    sock = writer.get_extra_info("socket")
    if sock is not None and not writer.transport.is_closing():
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def close(writers: tuple[asyncio.StreamWriter, ...], *, reset: bool) -> None:
    """Close every writer and wait, bounded, until their sockets are really closed (no
    ResourceWarning); a clean close that cannot flush in time becomes an RST."""
    for writer in writers:
        abort(writer) if reset else writer.close()
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await _closed(writers)
    except TimeoutError:
        for writer in writers:
            abort(writer)
        await _closed(writers)


async def _closed(writers: tuple[asyncio.StreamWriter, ...]) -> None:
    for writer in writers:
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class Pipe:
    """One direction of one connection."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, direction: Direction,
        connection: int, control: Control,
    ) -> None:  # fmt: skip
        self._reader, self._writer = reader, writer
        self._direction, self._connection, self._control = direction, connection, control
        self._queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(QUEUE_CHUNKS)
        self._sent = 0
        self._next_send = 0.0
        self._jitter = random.Random(f"{connection}:{direction}")
        self._flip: tuple[int, np.random.Generator] | None = None

    async def read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while chunk := await self._reader.read(CHUNK):
            await self._queue.put((loop.time(), chunk))
        await self._queue.put(None)

    async def write_loop(self) -> None:
        """Forward chunk by chunk; at the end of the stream pass the half-close on."""
        while (item := await self._queue.get()) is not None:
            arrived, chunk = item
            await self._forward(chunk, arrived, self._control.fault_for(*self._key))
        if self._writer.can_write_eof():
            self._writer.write_eof()

    @property
    def _key(self) -> tuple[Direction, int]:
        return self._direction, self._connection

    async def _forward(self, chunk: bytes, arrived: float, fault: Fault | None) -> None:
        match fault:
            case Blackhole():
                self._control.count(self._direction, dropped=len(chunk))
            case Delay():
                extra = self._jitter.uniform(0.0, fault.jitter)
                await _sleep_until(arrived + fault.seconds + extra)
                await self._send(chunk)
            case Flip():
                await self._send(self._flipped(chunk, fault))
            case Bandwidth():
                await self._pace(len(chunk), fault.bytes_per_second)
                await self._send(chunk)
            case Truncate() | ResetAfter():
                await self._send_until(chunk, fault)
            case None:
                await self._send(chunk)

    async def _send(self, chunk: bytes) -> None:
        self._writer.write(chunk)
        await self._writer.drain()
        self._sent += len(chunk)
        self._control.count(self._direction, forwarded=len(chunk))

    async def _send_until(self, chunk: bytes, fault: Truncate | ResetAfter) -> None:
        keep = chunk[: max(0, fault.after_bytes - self._sent)]
        if keep:
            await self._send(keep)
        self._control.count(self._direction, dropped=len(chunk) - len(keep))
        if self._sent >= fault.after_bytes:
            raise CutError(reset=isinstance(fault, ResetAfter))

    def _flipped(self, chunk: bytes, fault: Flip) -> bytes:
        if self._flip is None or self._flip[0] != fault.seed:
            entropy = [fault.seed, self._connection, list(Direction).index(self._direction)]
            self._flip = (fault.seed, np.random.default_rng(entropy))
        damaged, hits = flip_chunk(chunk, fault.rate, self._flip[1])
        self._control.count(self._direction, flipped=hits)
        return damaged

    async def _pace(self, size: int, rate: int) -> None:
        now = asyncio.get_running_loop().time()
        start = max(now, self._next_send)
        self._next_send = start + size / rate
        await _sleep_until(start)


async def _sleep_until(when: float) -> None:
    await asyncio.sleep(max(0.0, when - asyncio.get_running_loop().time()))


class Connection:
    """A client connection and its upstream connection, joined by two pipes."""

    def __init__(self, ident: int, client: Streams, upstream: Streams, control: Control) -> None:
        self.ident = ident
        self._control = control
        self._writers = (client[1], upstream[1])
        self._pipes = tuple(
            Pipe(reader, writer, direction=direction, connection=ident, control=control)
            for reader, writer, direction in (
                (client[0], upstream[1], Direction.UP),
                (upstream[0], client[1], Direction.DOWN),
            )
        )

    async def run(self) -> None:
        """Forward until both directions ended; a peer's RST is passed on as an RST."""
        reset = True
        try:
            async with asyncio.TaskGroup() as group:
                for pipe in self._pipes:
                    group.create_task(pipe.read_loop())
                    group.create_task(pipe.write_loop())
            reset = False
        except* CutError as cuts:
            reset = any(isinstance(cut, CutError) and cut.reset for cut in cuts.exceptions)
            self._control.event("reset", int(reset))
        except* OSError:
            reset = True
        finally:
            await close(self._writers, reset=reset)

    def abort(self) -> None:
        """Reset both sides now (the task running ``run`` must be cancelled as well)."""
        for writer in self._writers:
            abort(writer)
