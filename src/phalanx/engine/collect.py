"""One round's collection: dispatch, await replies against deadlines, retry, replace.

A failure is an input: it is recorded, may be retried with backoff, and may cause a fresh
client to be asked, but it never raises. Collection stops when the target number of updates
has been accepted, when nothing more can arrive, or at the round deadline.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field

import torch
from sortedcontainers import SortedList

from phalanx.config import RunConfig, ValidationConfig
from phalanx.core.messages import (
    ClientUpdate,
    Envelope,
    ModelRef,
    PartialWork,
    TaskConfig,
    TaskFailure,
    TaskKey,
    TrainTask,
)
from phalanx.core.state import ClientHealth
from phalanx.core.tensors import Manifest
from phalanx.engine.health import HealthMonitor
from phalanx.engine.health_index import HealthIndex
from phalanx.engine.history import RoundEvent, RoundRecord
from phalanx.engine.membership import Membership
from phalanx.engine.offload import Offloader
from phalanx.engine.pool import MemoryBudgetError, UpdatePool
from phalanx.engine.ports import Runtime
from phalanx.engine.retry import RetryPolicy
from phalanx.engine.selection import sample_one_excluding, sample_ranked
from phalanx.engine.validation import Accepted, Rejected, validate_update
from phalanx.types import ClientId, FailureKind, HealthState

# A runtime that never suspends (the simulation) must still let a stop signal land, so the
# collector yields to the event loop at least this often; yielding at every event would cost
# a loop iteration (an epoll call) per event, the largest part of a big round's engine time.
YIELD_EVERY_S = 0.02

# Hard cap on loop iterations of one round: every iteration consumes an event or a timer,
# so a round with k tasks needs about 3k; this only guards against a runtime that misbehaves.
_MAX_STEPS = 1_000_000


Slot = tuple[ClientId, int]  # (client, attempt): a task of the round in flight


@dataclass
class RoundInputs:
    round_index: int
    model_version: int
    params: torch.Tensor
    manifest: Manifest
    model: ModelRef  # ``params`` as published to the runtime: what tasks refer to
    envelope: Envelope = field(default_factory=Envelope)

    @property
    def update_bytes(self) -> int:
        """The size of one update: what validating or folding one works through."""
        return 4 * self.params.numel()


@dataclass
class Collection:
    """Mutable bookkeeping of a round in flight. Every structure is sized by the round's
    tasks, never by the registered population."""

    inputs: RoundInputs
    deadline: float
    index: HealthIndex
    record: RoundRecord
    pool: UpdatePool
    # The tasks in flight by (client, attempt): the round is the collection's own, and a
    # tuple of ints hashes in C where a TaskKey's hash runs in Python (several per event).
    active: dict[Slot, TrainTask] = field(default_factory=dict)
    # (deadline, client, attempt) of every task sent, in deadline order; entries of tasks no
    # longer active are skipped lazily. A task's deadline is the clock's now plus a fixed
    # time-to-live (capped by the round's deadline) and the clock only moves forward, so
    # deadlines come in order: a queue, not a heap (see ``_dispatch``). Plain numbers: the
    # garbage collector stops tracking such a tuple, and a round holds one per task.
    timers: deque[tuple[float, ClientId, int]] = field(default_factory=deque)
    retries: list[tuple[float, ClientId, int]] = field(default_factory=list)  # a heap
    asked: set[ClientId] = field(default_factory=set)
    # Asked clients that are healthy now: what a replacement must skip in the healthy set.
    # Built at the round's first replacement (most rounds have few or none), then kept.
    asked_healthy: SortedList | None = None

    @property
    def in_play(self) -> int:
        return self.pool.count + len(self.active) + len(self.retries)


class Collector:
    def __init__(
        self,
        config: RunConfig,
        runtime: Runtime,
        membership: Membership,
        health: HealthMonitor,
        retry: RetryPolicy,
        *,
        offload: Offloader | None = None,
    ) -> None:
        self._config = config
        self._runtime = runtime
        self._membership = membership
        self._health = health
        self._retry = retry
        # Validation and folding of a large update run off the loop, one at a time and
        # awaited before the next event is taken: folds stay in arrival order.
        self._offload = offload or Offloader(enabled=False)  # None: all inline
        self._last_task_config: TaskConfig | None = None
        self._yielded_at = time.monotonic()

    async def _yield_now(self) -> None:
        """Let the event loop run (a stop signal, a server's heartbeats): the collector does
        so at least every ``YIELD_EVERY_S`` of wall time; a runtime that suspends does so on
        its own."""
        self._yielded_at = time.monotonic()
        await asyncio.sleep(0)

    async def collect(self, col: Collection, probes: list[ClientId]) -> None:
        target = self._config.selection.clients_per_round
        goal = self._config.selection.dispatch_count
        first = sample_ranked(
            col.index.healthy, goal, seed=self._config.seed,
            round_index=col.inputs.round_index, stream="select",
        )  # fmt: skip
        col.record.probes = len(probes)
        for client in [*first, *probes]:
            self._dispatch(col, client, attempt=1)
        # Looked up once: the loop runs some 1.5 times per task of the round.
        now, next_event, handle = self._runtime.clock.now, self._runtime.next_event, self._handle
        pool, reasons, deadline = col.pool, col.record.reasons, col.deadline
        for _ in range(_MAX_STEPS):
            if now() >= deadline:
                break
            if pool.count >= target and not self._drop_outliers(col, goal):
                break
            if reasons:
                break  # a latched error: the round cannot commit
            if not col.active and not col.retries and not self._replace(col, goal):
                break
            # No local name keeps the update alive while the next one arrives: a round holds
            # one message at a time (``offloaded`` is done, its frame cleared, by then).
            offloaded = handle(col, await next_event(until=self._next_timer(col)), goal)
            if offloaded is not None:
                await offloaded
            if time.monotonic() - self._yielded_at >= YIELD_EVERY_S:
                await self._yield_now()
        self._drop_outliers(col, goal)
        self._cancel_rest(col)

    # -- dispatch ---------------------------------------------------------------------

    def _dispatch(self, col: Collection, client: ClientId, attempt: int) -> None:
        now = self._runtime.clock.now()
        key = TaskKey(col.inputs.round_index, client, attempt)
        deadline = min(now + self._config.deadlines.task_s, col.deadline)  # the engine's timer
        task = TrainTask(
            col.inputs.envelope, key, col.inputs.model, self._task_config(deadline - now)
        )
        slot = (client, attempt)
        col.active[slot] = task
        timers = col.timers
        if not timers or timers[-1][0] <= deadline:
            timers.append((deadline, client, attempt))
        else:  # a clock that went back (none of ours does): keep the queue in order
            bisect.insort(timers, (deadline, client, attempt))
        col.asked.add(client)
        if attempt == 1:
            self._sync_asked_healthy(col, client)
            col.record.dispatched.append(client)
        else:
            col.record.retries += 1
        self._runtime.submit(task)

    def _task_config(self, ttl_s: float) -> TaskConfig:
        """The task's configuration; reused while the time-to-live stays the same (every
        task of a round's first wave): it is frozen, and a round sends thousands."""
        last = self._last_task_config
        if last is not None and last.ttl_s == ttl_s:
            return last
        training, partial = self._config.training, self._config.partial_work
        self._last_task_config = TaskConfig(
            local_epochs=training.local_epochs, batch_size=training.batch_size,
            lr=training.lr, ttl_s=ttl_s,
            partial=PartialWork(partial.enabled, partial.min_fraction),
        )  # fmt: skip
        return self._last_task_config

    def _replace(self, col: Collection, goal: int) -> bool:
        """Ask one fresh healthy client if the round is short and time allows."""
        config = self._config.replacement
        now = self._runtime.clock.now()
        if not config.enabled or col.in_play >= goal:
            return False
        if col.deadline - now < config.min_remaining_s:
            return False
        choice = sample_one_excluding(
            col.index.healthy, self._asked_healthy(col), seed=self._config.seed,
            round_index=col.inputs.round_index, stream=f"replace/{col.record.replacements}",
        )  # fmt: skip
        if choice is None:
            return False
        col.record.replacements += 1
        self._dispatch(col, choice, attempt=1)
        return True

    # -- health and membership --------------------------------------------------------

    def set_health(self, col: Collection, client: ClientId, health: ClientHealth) -> None:
        if col.index.set(client, health):
            self._sync_asked_healthy(col, client)

    @staticmethod
    def _asked_healthy(col: Collection) -> SortedList:
        if col.asked_healthy is None:
            col.asked_healthy = SortedList(c for c in col.asked if col.index.is_healthy(c))
        return col.asked_healthy

    @staticmethod
    def _sync_asked_healthy(col: Collection, client: ClientId) -> None:
        excluded = col.asked_healthy
        if excluded is None:
            return
        wanted = client in col.asked and col.index.is_healthy(client)
        if wanted and client not in excluded:
            excluded.add(client)
        elif not wanted:
            excluded.discard(client)

    def apply_membership(self, col: Collection) -> None:
        """Joins and leaves since the last look: a joiner becomes selectable, a leaver is
        not, and its task in flight fails as a crash (not retried: it is gone)."""
        changes = self._membership.changes()
        if not changes:
            return
        left = col.index.apply(changes)
        for change in changes:
            self._sync_asked_healthy(col, change.client)
        for client in left:
            self._fail_leaver(col, client)

    def _fail_leaver(self, col: Collection, client: ClientId) -> None:
        for slot in [s for s in col.active if s[0] == client]:
            key = col.active.pop(slot).key
            self._runtime.cancel(key)
            self._failed(col, key, FailureKind.CRASH, "the client left")

    # -- events and timers ------------------------------------------------------------

    def _next_timer(self, col: Collection) -> float:
        timers, active, retries = col.timers, col.active, col.retries
        while timers and (timers[0][1], timers[0][2]) not in active:
            timers.popleft()  # answered or cancelled since
        soonest = col.deadline
        if timers and timers[0][0] < soonest:
            soonest = timers[0][0]
        if retries and retries[0][0] < soonest:
            soonest = retries[0][0]
        return soonest

    def _fire_timers(self, col: Collection) -> None:
        """Fail the tasks whose deadline has passed (in client order), then send the
        retries that are due."""
        now = self._runtime.clock.now()
        expired: list[tuple[ClientId, int, float]] = []
        timers = col.timers
        while timers and timers[0][0] <= now:
            deadline, client, attempt = timers.popleft()
            if (client, attempt) in col.active:
                expired.append((client, attempt, deadline))
        for client, attempt, deadline in sorted(expired):
            key = col.active.pop((client, attempt)).key
            self._failed(col, key, FailureKind.TIMEOUT, f"no reply by t={deadline:.2f}")
        while col.retries and col.retries[0][0] <= now:
            _, client, attempt = heapq.heappop(col.retries)
            if self._membership.is_live(client):
                self._dispatch(col, client, attempt)
            else:
                self._replace(col, self._config.selection.dispatch_count)

    def _handle(
        self, col: Collection, event: ClientUpdate | TaskFailure | None, goal: int
    ) -> Coroutine[None, None, None] | None:
        """Take an event (None: a timer is due). An update of a small model is handled here
        and now, without a coroutine (a round has k of them); a large one returns the
        coroutine that validates and folds it off the loop, for the caller to await."""
        self.apply_membership(col)  # first: a reply from a client that has left is void
        if event is None:
            self._fire_timers(col)
            return None
        key = event.key
        task = None
        if key.round == col.inputs.round_index:  # an older round's event is late
            task = col.active.pop((key.client, key.attempt), None)
        if task is None:
            return None  # late, duplicate or cancelled: submissions are idempotent by key
        if isinstance(event, TaskFailure):
            self._failed(col, event.key, event.kind, event.detail)
            return None
        if not self._offload.inline(col.inputs.update_bytes):
            return self._offloaded(col, event, task, goal)
        inputs = col.inputs
        verdict = validate_update(
            event, task, inputs.params, inputs.manifest, self._config.validation,
            self._membership.declared_examples(key.client),
        )  # fmt: skip
        accepted = self._judged(col, event, verdict, goal)
        if accepted is not None:
            try:
                outliers = col.pool.add(accepted)
            except MemoryBudgetError as error:
                col.record.reasons.append(str(error))
                return None
            if outliers:
                self._reject_outliers(col, outliers, goal)
        return None

    async def _offloaded(
        self, col: Collection, event: ClientUpdate, task: TrainTask, goal: int
    ) -> None:
        """``_handle``'s work for a large update, on the executor's thread."""
        size = col.inputs.update_bytes
        verdict = await self._offload.cpu(
            size, validate_update, *self._validation_args(col, event, task)
        )
        accepted = self._judged(col, event, verdict, goal)
        if accepted is not None:
            try:
                outliers = await self._offload.cpu(size, col.pool.add, accepted)
            except MemoryBudgetError as error:
                col.record.reasons.append(str(error))
                return
            if outliers:
                self._reject_outliers(col, outliers, goal)

    def _validation_args(
        self, col: Collection, event: ClientUpdate, task: TrainTask
    ) -> tuple[ClientUpdate, TrainTask, torch.Tensor, Manifest, ValidationConfig, int | None]:
        inputs = col.inputs
        declared = self._membership.declared_examples(event.key.client)
        return event, task, inputs.params, inputs.manifest, self._config.validation, declared

    def _judged(
        self, col: Collection, event: ClientUpdate, verdict: Accepted | Rejected, goal: int
    ) -> Accepted | None:
        """Record the verdict on the client's health; the update if it goes to the pool."""
        if isinstance(verdict, Rejected):
            self.reject(col, event.key, verdict)
            self._replace(col, goal)
            return None
        client = event.key.client
        self.set_health(col, client, self._health.success(col.index.table[client]))
        return verdict

    def reject(self, col: Collection, key: TaskKey, verdict: Rejected) -> None:
        """A refused update is final: recorded, held against the client, never retried."""
        now = self._runtime.clock.now()
        col.record.events.append(
            RoundEvent(
                key.client, key.attempt, FailureKind.REJECTED, now, verdict.detail, verdict.reason
            )
        )
        self.set_health(
            col, key.client, self._health.failure(col.index.table[key.client], key.round)
        )

    def _failed(self, col: Collection, key: TaskKey, kind: FailureKind, detail: str) -> None:
        now = self._runtime.clock.now()
        col.record.events.append(RoundEvent(key.client, key.attempt, kind, now, detail))
        health = self._health.failure(col.index.table[key.client], key.round)
        self.set_health(col, key.client, health)
        when = self._retry.next_attempt_at(
            kind, round_index=key.round, client=key.client, attempt=key.attempt,
            now=now, round_deadline=col.deadline,
        )  # fmt: skip
        live = self._membership.is_live(key.client)
        if when is not None and live and health.state is not HealthState.SIDELINED:
            heapq.heappush(col.retries, (when, key.client, key.attempt + 1))
        else:
            self._replace(col, self._config.selection.dispatch_count)

    def _drop_outliers(self, col: Collection, goal: int) -> bool:
        """Reject updates whose norm is far above the median of those accepted so far.

        Checked whenever the round reaches its target, so a rejected outlier can still be
        made up for by an over-selected reply or a replacement while time remains."""
        return self._reject_outliers(col, col.pool.review(), goal)

    def _reject_outliers(
        self, col: Collection, outliers: list[tuple[Accepted, Rejected]], goal: int
    ) -> bool:
        for accepted, verdict in outliers:
            self.reject(col, accepted.update.key, verdict)
            self._replace(col, goal)
        return bool(outliers)

    def _cancel_rest(self, col: Collection) -> None:
        for task in list(col.active.values()):
            self._runtime.cancel(task.key)
        col.record.cancelled = len(col.active) + len(col.retries)
        col.active.clear()
        col.timers.clear()
        col.retries.clear()
