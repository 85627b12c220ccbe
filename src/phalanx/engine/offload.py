"""CPU-heavy and blocking work off the event loop, so the loop keeps answering.

The coordinator's event loop will be shared with a server whose heartbeats must be answered
on time: a heartbeat missed while the loop hashes a 100 MB update or runs Bulyan for 1.5 s
reads as a client failure. The engine therefore hands such work to a thread (hashlib and
torch release the GIL for their heavy parts) and awaits it. It awaits each piece of work
before it takes the next event, so the order of folds stays the order of arrival and a run
stays as deterministic as before.

A hand-off costs about 0.1 ms (a thread switch each way); work on fewer than
``inline_bytes`` (an update of the seed MLP or of the 16-float benchmark model) runs inline,
where it takes about as long as the hand-off would (``python -m benchmarks.offload_threshold``
measures it).

CPU work goes to one thread (the engine does one thing at a time; more threads would only
compete for the cores), a pool owned here and shut down by ``close``. A blocking call with a
timeout (a checkpoint store's save) runs on a daemon thread of its own, at most
``io_threads`` at once: a thread cannot be killed, so a call that hangs past its timeout
keeps its thread, and it must neither starve the engine's CPU work nor keep the process from
exiting. Once ``io_threads`` calls hang, further ones are refused at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from phalanx.errors import PhalanxError

P = ParamSpec("P")
T = TypeVar("T")

INLINE_BYTES = 256 * 1024
"""Work on fewer bytes than this runs on the loop. Validating and folding a 256 KiB update
took 0.3 ms inline against 0.15 ms more through the executor (shared 2-core machine,
``benchmarks.offload_threshold``): below it, the loop is blocked for less than a third of a
millisecond per update and the hand-off would cost about as much as the work."""

IO_THREADS = 4


class Offloader:
    """``enabled=False`` runs all CPU work inline (no threads): what a caller without a
    shared loop may choose, and the contrast in the responsiveness test."""

    def __init__(
        self,
        *,
        inline_bytes: int = INLINE_BYTES,
        io_threads: int = IO_THREADS,
        enabled: bool = True,
    ) -> None:
        if io_threads < 1:
            raise ValueError(f"io_threads must be >= 1, got {io_threads}")
        self.inline_bytes = inline_bytes
        self.enabled = enabled
        self._cpu = ThreadPoolExecutor(1, thread_name_prefix="phalanx-cpu")
        self._io_slots = threading.BoundedSemaphore(io_threads)
        self._closed = False
        # The thread is released also when an engine is dropped without close().
        weakref.finalize(self, self._cpu.shutdown, wait=False, cancel_futures=True)

    def inline(self, size: int | None) -> bool:
        """Whether work on ``size`` bytes runs on the loop (``cpu`` would call it there): a
        hot caller checks first and calls directly, saving a coroutine per call."""
        return (size is not None and size < self.inline_bytes) or not self.enabled or self._closed

    async def cpu(
        self, size: int | None, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``fn(*args, **kwargs)`` on the CPU thread, or inline when ``size`` (the bytes it
        works on; None: unknown, always off the loop) is below ``inline_bytes``."""
        if self.inline(size):
            return fn(*args, **kwargs)
        return await self.start(fn, *args, **kwargs)

    def start(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[T]:
        """``fn(*args, **kwargs)`` submitted to the CPU thread now, not when the caller next
        yields to the loop: a future to await later, while the caller goes on (the engine's
        deferred evaluation). Disabled or closed, it runs here and the future is done."""
        loop = asyncio.get_running_loop()
        if self.inline(None):  # disabled or closed
            done: asyncio.Future[T] = loop.create_future()
            try:
                done.set_result(fn(*args, **kwargs))
            except Exception as exc:  # handed to whoever awaits it, as the thread's would be
                done.set_exception(exc)
            return done
        return loop.run_in_executor(self._cpu, functools.partial(fn, *args, **kwargs))

    async def run_blocking(
        self,
        fn: Callable[[], T],
        *,
        timeout_s: float,
        what: str,
        error: type[PhalanxError] = PhalanxError,
    ) -> T:
        """``fn()`` on a daemon thread; ``error`` naming ``what`` if it takes over
        ``timeout_s`` (the call itself runs on to its end: a thread cannot be stopped)."""
        if self._closed:
            raise error(f"{what}: the coordinator's executor is closed")
        if not self._io_slots.acquire(blocking=False):
            raise error(f"{what}: earlier blocking calls still hang; not starting another")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        thread = threading.Thread(
            target=self._call, args=(fn, loop, future), name="phalanx-io", daemon=True
        )
        thread.start()
        try:
            return await asyncio.wait_for(future, timeout_s)  # cancels it on timeout
        except TimeoutError:
            raise error(f"{what} did not finish within {timeout_s:g} s") from None

    def _call(
        self, fn: Callable[[], T], loop: asyncio.AbstractEventLoop, future: asyncio.Future[T]
    ) -> None:
        try:
            outcome: tuple[bool, object] = (True, fn())
        except BaseException as exc:  # handed to the awaiting task, which re-raises it
            outcome = (False, exc)
        finally:
            self._io_slots.release()
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(_settle, future, outcome)

    def close(self) -> None:
        """Stop taking work and release the CPU thread (idempotent). Blocking calls that
        timed out and still run are daemon threads: they do not delay the process's exit."""
        self._closed = True
        self._cpu.shutdown(wait=False, cancel_futures=True)


def _settle(future: asyncio.Future[T], outcome: tuple[bool, object]) -> None:
    if future.done():
        return  # cancelled: its caller timed out
    ok, value = outcome
    if ok:
        future.set_result(value)  # type: ignore[arg-type]
    else:
        future.set_exception(value)  # type: ignore[arg-type]
