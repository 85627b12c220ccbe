"""Faults acted out by a real process, and a training attempt that cannot outlive it.

The client package decides what a faulty client does (``ClientFault``); these make it
happen to the process: it dies (SIGKILL, no goodbye), goes silent with its connection open,
or loses its connection in the middle of a push. ``Attempt`` runs one training on a daemon
thread, so the agent can stop waiting at the task's time-to-live and a training that never
ends cannot keep the process from exiting.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import NoReturn

from phalanx.client import Reply
from phalanx.core.messages import ClientUpdate
from phalanx.errors import PhalanxError
from phalanx.runtime.grpc.client.calls import CoordinatorCalls, Cut
from phalanx.runtime.grpc.client.heartbeat import Heartbeat
from phalanx.runtime.grpc.session import Caller

log = logging.getLogger("phalanx.client")


class Attempt:
    """One training on a daemon thread of its own: the agent waits for it no longer than
    the task's time-to-live, and an attempt that never ends (a user's function that hangs)
    cannot keep the process from exiting."""

    def __init__(self, train: Callable[[], Reply]) -> None:
        self._train = train
        self._done = threading.Event()
        self._reply: Reply | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="phalanx-train", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return not self._done.is_set()

    def _run(self) -> None:
        try:
            self._reply = self._train()
        except BaseException as exc:  # handed to the waiting thread, raised there
            self._error = exc
        finally:
            self._done.set()

    def result(self, *, timeout_s: float) -> Reply | None:
        """The reply, or None when the attempt did not end within ``timeout_s``."""
        if not self._done.wait(timeout_s):
            return None
        if self._error is not None:
            raise self._error
        return self._reply


def die_after(delay_s: float, client: int) -> NoReturn:
    """SIGKILL this process after ``delay_s``: what a crash looks like from outside."""
    threading.Event().wait(delay_s)
    log.warning("injected crash: client %s kills itself (SIGKILL)", client)
    logging.shutdown()
    os.kill(os.getpid(), signal.SIGKILL)
    raise SystemExit(137)  # not reached: SIGKILL cannot be caught


def go_silent(heartbeat: Heartbeat, silent_s: float, client: int) -> None:
    """No heartbeat and no reply for ``silent_s``; the connection stays open."""
    log.warning("injected hang: client %s silent for %.1f s", client, silent_s)
    heartbeat.pause()
    try:
        threading.Event().wait(silent_s)
    finally:
        heartbeat.resume()


def push_cut_off(
    calls: CoordinatorCalls, caller: Caller, update: ClientUpdate, timeout_s: float
) -> bool:
    """Push the header and half the chunks, then close the connection under the push;
    True when the cut landed (False: the push completed first)."""
    total = sum(t.numel() for t in update.tensors.values()) * 4
    cut = Cut(1 + -(-total // calls.connection.limits.chunk_bytes) // 2)
    try:
        calls.push(caller, update, timeout_s, cut)
    except PhalanxError as exc:
        log.warning("injected drop: the push of %s cut off (%s)", update.key, exc)
        return True
    log.warning("injected drop: the push of %s completed before the cut", update.key)
    return False
