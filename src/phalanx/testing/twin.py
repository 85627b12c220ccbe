"""The scripted runtime twin: the Runtime port and a Membership on a virtual clock, with
replies, failures and times taken from a script instead of from clients.

An update is the global model plus the reply's ``delta`` on every weight (or whatever its
``update`` callable returns): exact, so a test can work out the aggregate by hand, and cheap,
so a benchmark measures the engine rather than training. The twin behaves as a transport
must (see ``tests/contract/test_runtime.py``): at most one event per key (a client's
duplicate is absorbed), nothing for a cancelled or unknown key, and a leaver's task in flight
fails. ``inject`` bypasses all that, to test how the engine copes with what a broken
transport or a forged message would deliver.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch

from phalanx.core.messages import ClientUpdate, Event, TaskFailure, TaskKey, TrainTask
from phalanx.core.models import ModelBook
from phalanx.core.tensors import Manifest, payload_digest, unflatten
from phalanx.engine.clock import VirtualClock
from phalanx.engine.membership import Roster
from phalanx.errors import RuntimeBackendError
from phalanx.types import ClientId, FailureKind

UpdateFn = Callable[[TrainTask], dict[str, torch.Tensor]]


@dataclass(frozen=True, slots=True)
class Reply:
    """What one attempt does, ``after_s`` seconds (virtual) after it was submitted."""

    after_s: float = 1.0
    fail: FailureKind | None = None  # a failure the transport observes instead of an update
    silent: bool = False  # never answers: only the engine's deadline finds out
    delta: float = 0.01  # the update: global model + delta, on every weight
    update: UpdateFn | None = None  # or the weights this returns
    num_examples: int = 10
    work_fraction: float = 1.0  # sent as steps done of STEPS_PLANNED
    duplicate: bool = False  # the client sends its reply twice


STEPS_PLANNED = 1000  # a scripted reply's planned local steps; work_fraction scales it

Script = Mapping[tuple[int, int, int], Reply] | Callable[[TaskKey], Reply]


class ScriptedMembership(Roster):
    """A roster whose waiting runs on the twin's virtual clock, through scripted joins."""

    def __init__(self, clients: Iterable[ClientId], runtime: ScriptedRuntime) -> None:
        super().__init__(clients, declared=runtime.declared)
        self._runtime = runtime

    async def wait_for(self, count: int, timeout_s: float) -> None:
        self._runtime.advance_membership(count, self._runtime.clock.now() + timeout_s)


@dataclass(slots=True)
class _Item:
    key: TaskKey | None = None  # a task's event; None: a membership change
    event: Event | None = None  # a prepared event (failure, injected)
    change: tuple[ClientId, bool] | None = None  # (client, joined)
    raw: bool = False  # injected: delivered as is


class ScriptedRuntime:
    def __init__(
        self,
        manifest: Manifest,
        clients: Iterable[ClientId] | int,
        *,
        script: Script | None = None,
        live: bool = True,
        joins: Iterable[tuple[float, ClientId]] = (),
        leaves: Iterable[tuple[float, ClientId]] = (),
        declared: Callable[[ClientId], int | None] | None = None,
        models: ModelBook | None = None,
    ) -> None:
        self.clock = VirtualClock()
        self._manifest = manifest
        # The engine publishes each round's model here (pass it as ``Engine(models=...)``);
        # the twin resolves a task's model reference through it, as a transport would.
        self.models = models or ModelBook(manifest)
        self._script = script or {}
        self.declared = declared or (lambda client: 10**6)
        population = range(clients) if isinstance(clients, int) else list(clients)
        self.membership = ScriptedMembership(population if live else (), self)
        # (time, submission order, what): a task's plain reply is its key alone (a round
        # queues thousands: one object fewer each for the collector to walk), anything else
        # an ``_Item``.
        self._queue: list[tuple[float, int, TaskKey | _Item]] = []
        self._seq = itertools.count()
        self._pending: dict[TaskKey, TrainTask] = {}
        # Keys answered, by round, as (client, attempt) tuples. Only the newest round's and
        # the one before are kept: the engine never submits a key of an older round, and a
        # set growing by every task of every round made a long benchmark's garbage
        # collections (which walk the young tracked objects) bill the engine for the twin.
        self._delivered: dict[int, set[tuple[ClientId, int]]] = {}
        self._replies: dict[TaskKey, Reply] = {}
        self._closed = False
        # What a test asserts on (a benchmark empties them between rounds).
        self.submitted: list[tuple[float, TaskKey]] = []
        self.cancelled: list[TaskKey] = []
        for when, client in joins:
            self.join_at(when, client)
        for when, client in leaves:
            self.leave_at(when, client)

    # -- the Runtime port ---------------------------------------------------------------

    def submit(self, task: TrainTask) -> None:
        if self._closed:
            raise RuntimeBackendError("submit on a closed runtime")
        key = task.key
        self.submitted.append((self.clock.now(), key))
        reply = self._reply(key)
        self._pending[key] = task
        self._replies[key] = reply
        if reply.silent:
            return
        when = self.clock.now() + reply.after_s
        heapq.heappush(self._queue, (when, next(self._seq), key))
        if reply.duplicate:
            heapq.heappush(self._queue, (when, next(self._seq), key))

    def cancel(self, key: TaskKey) -> None:
        self._replies.pop(key, None)
        if self._pending.pop(key, None) is not None:
            self.cancelled.append(key)

    async def next_event(self, until: float) -> Event | None:
        while self._queue and self._queue[0][0] <= until:
            when, _, item = heapq.heappop(self._queue)
            self.clock.advance_to(when)
            event = self._take(item, when)
            if event is not None:
                return event
        self.clock.advance_to(until)
        return None

    async def close(self, timeout_s: float = 10.0) -> None:
        self._closed = True
        self._queue.clear()
        self._pending.clear()

    # -- scripting ----------------------------------------------------------------------

    def inject(self, event: Event, at: float) -> None:
        """Deliver ``event`` at ``at`` as is: no dedup, no check that its key is pending."""
        self._push(at, event=event, raw=True)

    def join_at(self, when: float, client: ClientId) -> None:
        self._push(when, change=(client, True))

    def leave_at(self, when: float, client: ClientId) -> None:
        """``client`` disconnects at ``when``: its task in flight fails as a crash."""
        self._push(when, change=(client, False))

    def advance_membership(self, count: int, until: float) -> None:
        """Apply scripted membership changes in time order until ``count`` members are live
        or ``until`` (the clock moves with them); task events wait in the queue."""
        changes = sorted(
            (when, seq, item)
            for when, seq, item in self._queue
            if isinstance(item, _Item) and item.change is not None
        )
        for entry in changes:
            if self.membership.live_count() >= count or entry[0] > until:
                break
            self._queue.remove(entry)
            self.clock.advance_to(entry[0])
            self._apply(entry[2], entry[0])
        heapq.heapify(self._queue)
        if self.membership.live_count() < count:
            self.clock.advance_to(until)

    # -- internals ----------------------------------------------------------------------

    def _push(self, when: float, **fields: object) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), _Item(**fields)))  # type: ignore[arg-type]

    def _reply(self, key: TaskKey) -> Reply:
        if callable(self._script):
            return self._script(key)
        return self._script.get((key.round, key.client, key.attempt), Reply())

    def _take(self, item: TaskKey | _Item, when: float) -> Event | None:
        prepared = None
        if isinstance(item, TaskKey):
            key: TaskKey | None = item
        elif item.change is not None:
            self._apply(item, when)
            return None
        elif item.raw:
            return item.event
        else:
            key, prepared = item.key, item.event
        if key is None or key not in self._pending:
            return None  # a duplicate, or cancelled
        answered = self._answered(key.round)
        if (key.client, key.attempt) in answered:
            return None  # submitted again after its answer: still one event per key
        task = self._pending.pop(key)
        answered.add((key.client, key.attempt))
        return prepared or self._answer(task)

    def _answered(self, round_index: int) -> set[tuple[ClientId, int]]:
        """The keys of ``round_index`` answered so far; a newer round forgets all but the
        round before it."""
        answered = self._delivered.get(round_index)
        if answered is None:
            answered = self._delivered[round_index] = set()
            for old in [r for r in self._delivered if r < round_index - 1]:
                del self._delivered[old]
        return answered

    def _apply(self, item: _Item, when: float) -> None:
        if item.change is None:
            return
        client, joined = item.change
        if joined:
            self.membership.join(client)
            return
        self.membership.leave(client)
        for key in [k for k in self._pending if k.client == client]:
            failure = TaskFailure(key, FailureKind.CRASH, "the client left")
            self._push(when, key=key, event=failure)

    def _answer(self, task: TrainTask) -> Event:
        reply = self._replies.pop(task.key)
        if reply.fail is not None:
            return TaskFailure(task.key, reply.fail, f"scripted {reply.fail.value}")
        if reply.update is not None:
            tensors = reply.update(task)
        else:
            params = self.models.get(task.model).params
            tensors = unflatten(params + reply.delta, self._manifest)
        return ClientUpdate(
            task.envelope, task.key, task.model,
            steps_done=round(reply.work_fraction * STEPS_PLANNED), steps_planned=STEPS_PLANNED,
            num_examples=reply.num_examples, tensors=tensors, digest=payload_digest(tensors),
            sender=task.key.client,
        )  # fmt: skip
