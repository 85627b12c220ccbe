"""The lifecycle's checkpoint store calls: off the event loop, each with a timeout.

A store is a disk, an NFS mount or an object store; any of them can hang. The round's save
runs on a thread (``Offloader.run_blocking``) so the loop keeps serving while it writes, and
a save that takes longer than ``checkpoint.timeout_s`` fails the commit with a
``StorageError`` naming the store: the run stops (exit 9) with the previous round as its last
commit, and the round whose save timed out is never reported.

A thread cannot be stopped, so the timed-out call runs on. What it leaves is safe by the
stores' own rules: a save renames a complete, fsynced checkpoint into place or leaves only a
temporary directory that no listing counts, so a late finish is either a whole checkpoint of
*that* round (the same bytes a redo of the round writes: resuming from it is resuming after a
crash just behind the save) or nothing. It can never pass for a newer round, because the store
stays locked while it runs: ``close`` waits for late calls (up to the same timeout), and if one
still runs then, the store's lock is handed to that call, which releases it when it ends (or
the kernel does, when the process exits). No other run, in this process or another, writes to
the store or resumes from it before the late write has finished.

Start-up calls (finding the checkpoint to resume from, taking the lock) come before any round
and anything the loop serves, so they block, but are bounded by the same timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from phalanx.engine.offload import Offloader
from phalanx.errors import StorageError

T = TypeVar("T")

logger = logging.getLogger("phalanx.coordinator")


class _Call(Generic[T]):
    """One store call: ``done`` is set when it has ended (or will never start)."""

    def __init__(self, owner: StoreCalls, fn: Callable[[], T]) -> None:
        self.fn = fn
        self.owner = owner
        self.started = False
        self.done = threading.Event()

    def __call__(self) -> T:
        self.started = True
        try:
            return self.fn()
        finally:
            self.owner._finished(self)


class StoreCalls:
    """Runs store calls with ``timeout_s`` each and keeps track of the ones still running."""

    def __init__(self, timeout_s: float, *, offload: Offloader | None = None) -> None:
        self.timeout_s = timeout_s
        self._offload = offload or Offloader()
        self._lock = threading.Lock()
        self._running: set[_Call[Any]] = set()  # in flight, or timed out and running on
        self._at_end: list[Callable[[], None]] = []  # run when the last late call ends

    async def run(self, fn: Callable[[], T], *, what: str) -> T:
        """``fn()`` off the loop; ``StorageError`` naming ``what`` past the timeout."""
        call = self._start(fn)
        try:
            return await self._offload.run_blocking(
                call, timeout_s=self.timeout_s, what=what, error=StorageError
            )
        finally:
            if not call.started:  # refused before its thread ran it
                self._finished(call)

    def run_now(self, fn: Callable[[], T], *, what: str) -> T:
        """``fn()`` on a thread, waited for here (blocking) up to the timeout."""
        box: list[T] = []
        failure: list[BaseException] = []

        def capture() -> None:
            try:
                box.append(fn())
            except BaseException as exc:  # re-raised in the caller
                failure.append(exc)

        thread = threading.Thread(target=self._start(capture), name="phalanx-store", daemon=True)
        thread.start()
        thread.join(self.timeout_s)
        if thread.is_alive():
            raise StorageError(f"{what} did not finish within {self.timeout_s:g} s")
        if failure:
            raise failure[0]
        return box[0]

    def busy(self) -> bool:
        """Whether a call (one that timed out, say) still runs."""
        with self._lock:
            return bool(self._running)

    def drain(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` in all for every running call; whether none runs now."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            running = list(self._running)
        for call in running:
            call.done.wait(max(0.0, deadline - time.monotonic()))
        return not self.busy()

    def when_idle(self, action: Callable[[], None]) -> None:
        """Run ``action`` once no call runs: now, or from the last late call's thread."""
        with self._lock:
            if self._running:
                self._at_end.append(action)
                return
        action()

    def _start(self, fn: Callable[[], T]) -> _Call[T]:
        call = _Call(self, fn)
        with self._lock:
            self._running.add(call)
        return call

    def _finished(self, call: _Call[T]) -> None:
        with self._lock:
            self._running.discard(call)
            call.done.set()
            actions, self._at_end = (self._at_end, []) if not self._running else ([], self._at_end)
        for action in actions:
            try:
                action()
            except Exception:  # a thread has nobody to raise to: say so
                logger.exception("a deferred action after a late store call failed")
