"""The heartbeat thread, and the tasks the coordinator cancelled.

Every lease's interval the client says it is alive; the reply names tasks the coordinator
no longer wants (behind NAT a client learns of a cancellation only by asking), which the
agent then neither trains nor pushes. A cancellation holds for the epoch of the reply that
told it: a new leader redoes the round in flight with the same task keys, which an old
leader's cancellations must not touch. One refused because the session is gone waits for
the agent to join again, and no heartbeat goes out while a join is in flight.

A heartbeat's deadline is ``DEADLINE_FACTOR`` intervals. One that fails in the transport
moves the connection to the next address (closing its channel, which cancels any call on
it) only when no other call is in progress, or after ``MISSES_TO_MOVE`` misses in a row on
the same channel: under load a fresh channel may still be connecting when a heartbeat's
deadline passes, and closing it then cancelled the join going over it (the chaos runs saw
five joins in a row end ``CANCELLED: Channel closed!``). A leader that stops answering with
its connections open (SIGSTOP) is still left within ``MISSES_TO_MOVE`` heartbeats, the
long-poll on it cancelled. ``pause`` silences the thread without closing the connection:
an injected hang. ``stop`` returns within a beat's deadline.
"""

from __future__ import annotations

import logging
import threading

from phalanx.core.messages import TaskKey, TrainTask
from phalanx.errors import PhalanxError
from phalanx.runtime.grpc.client.calls import MissedBeatError
from phalanx.runtime.grpc.client.session import Session

log = logging.getLogger("phalanx.client.heartbeat")
MIN_INTERVAL_S = 0.02
KEEP_CANCELLED = 1024  # the newest keys kept; older rounds are long over
DEADLINE_FACTOR = 2.0  # a heartbeat's deadline, in intervals
MISSES_TO_MOVE = 3  # heartbeats missed in a row before the channel is replaced under a call


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
        self.missed = 0  # in a row, on the channel of generation ``_missed_on``
        self._missed_on = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=(DEADLINE_FACTOR + 1) * self._interval() + 1.0)

    def pause(self) -> None:
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    def _interval(self) -> float:
        return max(self._session.lease.heartbeat_interval_s, MIN_INTERVAL_S)

    def _run(self) -> None:
        while not self._stop.wait(self._interval()):
            if self._paused.is_set() or self._session.joining:
                continue
            self._beat()

    def _beat(self) -> None:
        interval = self._interval()
        try:
            reply = self._session.calls.heartbeat(self._session.caller, DEADLINE_FACTOR * interval)
        except MissedBeatError as exc:
            self._missed(exc)
            return
        except PhalanxError as exc:  # a lost session, a deposed leader's reply (moved on),
            # a newer one's (the agent joins), a channel another call replaced
            log.debug("heartbeat failed: %s", exc)
            self.missed = 0
            return
        self.missed = 0
        self.sent += 1
        if reply.cancelled:
            log.info("the coordinator cancelled %s", list(reply.cancelled))
            self._cancelled.add(reply.cancelled, reply.envelope.epoch)

    def _missed(self, exc: MissedBeatError) -> None:
        """Move to the next address if no other call is in progress, or after
        ``MISSES_TO_MOVE`` misses in a row on this channel; else wait for the next beat."""
        if exc.generation != self._missed_on:
            self._missed_on, self.missed = exc.generation, 0
        self.missed += 1
        connection = self._session.calls.connection
        busy = connection.busy
        log.debug("heartbeat missed (%d in a row, calls in progress: %s): %s",
                  self.missed, busy, exc)  # fmt: skip
        if not busy or self.missed >= MISSES_TO_MOVE:
            log.info("heartbeat: %s; moving on (%d missed)", exc, self.missed)
            connection.rotate(exc.generation)
            self.missed = 0
