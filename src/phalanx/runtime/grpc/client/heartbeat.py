"""The heartbeat thread, and the tasks the coordinator cancelled.

Every lease's interval the client says it is alive; the reply names tasks the coordinator
no longer wants (behind NAT a client learns of a cancellation only by asking), which the
agent then neither trains nor pushes. A cancellation holds for the epoch of the reply that
told it: a new leader redoes the round in flight with the same task keys, which an old
leader's cancellations must not touch. A heartbeat that fails in the transport is skipped
(the next one, on a fresh channel, tries again); one refused because the session is gone
waits for the agent to join again. ``pause`` silences the thread without closing the
connection: an injected hang. Each call's deadline is the interval, and ``stop`` returns
within one interval.
"""

from __future__ import annotations

import logging
import threading

from phalanx.core.messages import TaskKey, TrainTask
from phalanx.errors import PhalanxError
from phalanx.runtime.grpc.client.session import Session

log = logging.getLogger("phalanx.client.heartbeat")
MIN_INTERVAL_S = 0.02
KEEP_CANCELLED = 1024  # the newest keys kept; older rounds are long over


class Cancellations:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[tuple[int, TaskKey], None] = {}

    def add(self, keys: tuple[TaskKey, ...], epoch: int = 0) -> None:
        """``keys`` cancelled by the leader of ``epoch``."""
        with self._lock:
            self._keys.update(dict.fromkeys((epoch, key) for key in keys))
            while len(self._keys) > KEEP_CANCELLED:
                del self._keys[next(iter(self._keys))]

    def holds(self, task: TrainTask) -> bool:
        """Whether the leader that issued ``task`` cancelled it."""
        with self._lock:
            return (task.envelope.epoch, task.key) in self._keys


class Heartbeat:
    def __init__(self, session: Session, cancelled: Cancellations) -> None:
        self._session = session
        self._cancelled = cancelled
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._thread = threading.Thread(target=self._run, name="phalanx-heartbeat", daemon=True)
        self.sent = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._interval() + 1.0)

    def pause(self) -> None:
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    def _interval(self) -> float:
        return max(self._session.lease.heartbeat_interval_s, MIN_INTERVAL_S)

    def _run(self) -> None:
        while not self._stop.wait(self._interval()):
            if self._paused.is_set():
                continue
            try:
                caller = self._session.caller
                reply = self._session.calls.heartbeat(caller, self._interval())
            except PhalanxError as exc:  # transport (moved on already), a lost session,
                # a deposed leader's reply (moved on) or a newer one's (the agent joins)
                log.debug("heartbeat failed: %s", exc)
                continue
            self.sent += 1
            if reply.cancelled:
                log.info("the coordinator cancelled %s", list(reply.cancelled))
                self._cancelled.add(reply.cancelled, reply.envelope.epoch)
