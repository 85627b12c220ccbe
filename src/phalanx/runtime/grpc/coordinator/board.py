"""The tasks in flight, per client: submitted by the engine, handed out by each client's
long-poll, cancelled or expired, and answered at most once.

Clients may sit behind NAT, so nothing is pushed to them: a task waits in its client's
mailbox until that client's ``PullTask`` takes it, and a cancellation of a task already
taken waits until its next heartbeat (``told``). The board also decides whether a reply may
be taken at all (``check_reply``): one from another round, for a task no longer wanted, past
its time-to-live, trained on another model, or already received is refused with the reason.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

from phalanx.core.messages import ModelRef, TaskKey, TrainTask
from phalanx.engine.clock import Clock
from phalanx.errors import DuplicateError, StaleError
from phalanx.types import ClientId


@dataclass
class Entry:
    task: TrainTask
    submitted_at: float  # on the runtime's clock: the engine's deadline is this + ttl
    delivered: bool = False

    @property
    def expires_at(self) -> float:
        return self.submitted_at + self.task.config.ttl_s


class TaskBoard:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.round = -1  # the newest round a task was submitted for
        self.finished = False  # the run is over: pulls answer FINISHED
        self._pending: dict[TaskKey, Entry] = {}
        self._mail: dict[ClientId, deque[TaskKey]] = {}
        self._wake: dict[ClientId, asyncio.Event] = {}
        self._tell: dict[ClientId, list[TaskKey]] = {}
        self._received: set[TaskKey] = set()  # keys answered, this round and later
        self._expired: dict[TaskKey, float] = {}  # past their time-to-live: by how much

    def add(self, task: TrainTask) -> bool:
        """Post ``task``; False (nothing changes) if its key was already posted."""
        key = task.key
        if key in self._pending or key in self._received:
            return False
        if key.round > self.round:
            self.round = key.round
            self._received = {k for k in self._received if k.round >= key.round}
            self._expired = {k: t for k, t in self._expired.items() if k.round >= key.round}
        self._pending[key] = Entry(task, self._clock.now())
        self._mail.setdefault(key.client, deque()).append(key)
        wake = self._wake.get(key.client)
        if wake is not None:
            wake.set()
        return True

    def drop(self, key: TaskKey) -> Entry | None:
        """Nothing more is wanted from ``key``; a client that took it hears so."""
        entry = self._pending.pop(key, None)
        if entry is not None and entry.delivered:
            self._tell.setdefault(key.client, []).append(key)
        return entry

    def keys_of(self, client: ClientId) -> list[TaskKey]:
        mail = self._mail.get(client, ())
        return [k for k in mail if k in self._pending] + [
            k for k, e in self._pending.items() if k.client == client and e.delivered
        ]

    def delivered_to(self, client: ClientId) -> list[TaskKey]:
        return [k for k, e in self._pending.items() if k.client == client and e.delivered]

    def forget(self, client: ClientId) -> None:
        """A client that left: nothing is kept for it."""
        self._tell.pop(client, None)
        self._mail.pop(client, None)
        self._wake.pop(client, None)

    def told(self, client: ClientId) -> tuple[TaskKey, ...]:
        """The client's taken tasks cancelled since it last asked."""
        return tuple(self._tell.pop(client, ()))

    def expired(self, now: float) -> list[TaskKey]:
        """Drop the tasks past their time-to-live (the engine has failed them by now)."""
        keys = [k for k, e in self._pending.items() if e.expires_at < now]
        for key in keys:
            entry = self.drop(key)
            if entry is not None:
                self._expired[key] = entry.expires_at
        return keys

    async def take(self, client: ClientId, wait_s: float) -> TrainTask | None:
        """The client's next task, waiting up to ``wait_s``; None: nothing came (or the run
        is over: see ``finished``)."""
        end = time.monotonic() + wait_s
        for _ in range(1_000_000):  # woken at most once per task posted or finish
            task = self._pop(client)
            remaining = end - time.monotonic()
            if task is not None or self.finished or remaining <= 0:
                return task
            wake = self._wake.setdefault(client, asyncio.Event())
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), remaining)
            except TimeoutError:
                return self._pop(client)
        return None

    def finish(self) -> None:
        self.finished = True
        for wake in self._wake.values():
            wake.set()

    def check_reply(self, key: TaskKey, base: ModelRef, run_id: str) -> Entry:
        """The task a reply answers, or the refusal naming why it is not wanted."""
        if key in self._received:
            raise DuplicateError(f"task {_name(key)}: its update was already received")
        entry = self._pending.get(key)
        now = self._clock.now()
        if entry is None and key in self._expired:
            raise StaleError(f"task {_name(key)}: late by {now - self._expired[key]:.2f} s")
        if entry is None:
            if key.round < self.round:
                raise StaleError(
                    f"task {_name(key)}: round {key.round} is over (the coordinator is at "
                    f"round {self.round})"
                )
            raise StaleError(
                f"task {_name(key)} is no longer wanted (cancelled, timed out or never sent)"
            )
        if not entry.delivered:
            raise StaleError(f"task {_name(key)} was never handed to its client")
        if run_id != entry.task.envelope.run_id:
            raise StaleError(
                f"task {_name(key)}: the update is for run {run_id!r}, this coordinator runs "
                f"{entry.task.envelope.run_id!r}"
            )
        if base != entry.task.model:
            raise StaleError(
                f"task {_name(key)}: trained from model version {base.version} "
                f"({base.sha256[:12]}); the task named version {entry.task.model.version} "
                f"({entry.task.model.sha256[:12]})"
            )
        if now > entry.expires_at:
            self.drop(key)
            self._expired[key] = entry.expires_at
            raise StaleError(
                f"task {_name(key)}: late by {now - entry.expires_at:.2f} s (its "
                f"time-to-live was {entry.task.config.ttl_s:.2f} s)"
            )
        return entry

    def received(self, key: TaskKey) -> bool:
        """The update for ``key`` arrived whole: answered, never taken again. False if the
        task was dropped while the update streamed."""
        if self._pending.pop(key, None) is None:
            return False
        self._received.add(key)
        return True

    def clear(self) -> None:
        self._pending.clear()
        self._mail.clear()
        self.finish()

    def _pop(self, client: ClientId) -> TrainTask | None:
        mail = self._mail.get(client)
        while mail:
            entry = self._pending.get(mail.popleft())
            if entry is not None:
                entry.delivered = True
                return entry.task
        return None


def _name(key: TaskKey) -> str:
    return f"(round {key.round}, client {key.client}, attempt {key.attempt})"
