"""One round's collection: dispatch, await replies against deadlines, retry, replace.

A failure is an input: it is recorded, may be retried with backoff, and may cause a fresh
client to be asked, but it never raises. Collection stops when the target number of updates
has been accepted, when nothing more can arrive, or at the round deadline.
"""

from __future__ import annotations

import asyncio
import heapq
from dataclasses import dataclass, field

import torch

from phalanx.config import RunConfig
from phalanx.core.messages import ClientUpdate, TaskFailure, TaskKey, TrainTask
from phalanx.core.tensors import Manifest
from phalanx.engine.health import HealthMonitor, HealthTable
from phalanx.engine.history import RoundEvent, RoundRecord
from phalanx.engine.pool import MemoryBudgetError, UpdatePool
from phalanx.engine.ports import Runtime
from phalanx.engine.retry import RetryPolicy
from phalanx.engine.selection import sample_clients
from phalanx.engine.validation import Accepted, Rejected, validate_update
from phalanx.types import ClientId, FailureKind, HealthState

# Hard cap on loop iterations of one round: every iteration consumes an event or a timer,
# so a round with k tasks needs about 3k; this only guards against a runtime that misbehaves.
_MAX_STEPS = 1_000_000


@dataclass
class RoundInputs:
    round_index: int
    model_version: int
    params: torch.Tensor
    manifest: Manifest


@dataclass
class Collection:
    """Mutable bookkeeping of a round in flight."""

    inputs: RoundInputs
    deadline: float
    health: HealthTable
    record: RoundRecord
    pool: UpdatePool
    active: dict[TaskKey, TrainTask] = field(default_factory=dict)
    retries: list[tuple[float, ClientId, int]] = field(default_factory=list)  # a heap
    asked: set[ClientId] = field(default_factory=set)
    opening_health: HealthTable = field(default_factory=dict)  # as the round opened

    @property
    def in_play(self) -> int:
        return self.pool.count + len(self.active) + len(self.retries)


class Collector:
    def __init__(
        self, config: RunConfig, runtime: Runtime, health: HealthMonitor, retry: RetryPolicy
    ) -> None:
        self._config = config
        self._runtime = runtime
        self._health = health
        self._retry = retry

    async def collect(
        self, col: Collection, healthy: list[ClientId], probes: list[ClientId]
    ) -> None:
        target = self._config.selection.clients_per_round
        goal = self._config.selection.dispatch_count
        first = sample_clients(
            healthy, goal, seed=self._config.seed, round_index=col.inputs.round_index,
            stream="select",
        )  # fmt: skip
        col.record.probes = len(probes)
        for client in [*first, *probes]:
            self._dispatch(col, client, attempt=1)
        clock = self._runtime.clock
        for _ in range(_MAX_STEPS):
            if clock.now() >= col.deadline:
                break
            if col.pool.count >= target and not self._drop_outliers(col, goal):
                break
            if col.record.reasons:
                break  # a latched error: the round cannot commit
            if not col.active and not col.retries and not self._replace(col, goal):
                break
            # No local name keeps the update alive while the next one arrives: a round holds
            # one message at a time.
            self._handle(col, await self._runtime.next_event(until=self._next_timer(col)), goal)
            await asyncio.sleep(0)  # a runtime that never suspends must still let a stop land
        self._drop_outliers(col, goal)
        self._cancel_rest(col)

    # -- dispatch ---------------------------------------------------------------------

    def _dispatch(self, col: Collection, client: ClientId, attempt: int) -> None:
        now = self._runtime.clock.now()
        key = TaskKey(col.inputs.round_index, client, attempt)
        task = TrainTask(
            key=key,
            model_version=col.inputs.model_version,
            params=col.inputs.params,
            deadline=min(now + self._config.deadlines.task_s, col.deadline),
            issued_at=now,
        )
        col.active[key] = task
        col.asked.add(client)
        if attempt == 1:
            col.record.dispatched.append(client)
        else:
            col.record.retries += 1
        self._runtime.submit(task)

    def _replace(self, col: Collection, goal: int) -> bool:
        """Ask one fresh healthy client if the round is short and time allows."""
        config = self._config.replacement
        now = self._runtime.clock.now()
        if not config.enabled or col.in_play >= goal:
            return False
        if col.deadline - now < config.min_remaining_s:
            return False
        fresh = [c for c, h in col.health.items() if h.state is HealthState.HEALTHY]
        fresh = [c for c in fresh if c not in col.asked]
        choice = sample_clients(
            fresh, 1, seed=self._config.seed, round_index=col.inputs.round_index,
            stream=f"replace/{col.record.replacements}",
        )  # fmt: skip
        if not choice:
            return False
        col.record.replacements += 1
        self._dispatch(col, choice[0], attempt=1)
        return True

    # -- events and timers ------------------------------------------------------------

    def _next_timer(self, col: Collection) -> float:
        timers = [task.deadline for task in col.active.values()]
        if col.retries:
            timers.append(col.retries[0][0])
        return min([*timers, col.deadline])

    def _fire_timers(self, col: Collection) -> None:
        now = self._runtime.clock.now()
        for key, task in sorted(col.active.items(), key=lambda kv: (kv[0].client, kv[0].attempt)):
            if task.deadline <= now:
                del col.active[key]
                self._failed(col, key, FailureKind.TIMEOUT, f"no reply by t={task.deadline:.2f}")
        while col.retries and col.retries[0][0] <= now:
            _, client, attempt = heapq.heappop(col.retries)
            self._dispatch(col, client, attempt)

    def _handle(self, col: Collection, event: ClientUpdate | TaskFailure | None, goal: int) -> None:
        if event is None:
            self._fire_timers(col)
        else:
            self._on_event(col, event, goal)

    def _on_event(self, col: Collection, event: ClientUpdate | TaskFailure, goal: int) -> None:
        task = col.active.pop(event.key, None)
        if task is None:
            return  # late, duplicate or cancelled: submissions are idempotent by key
        if isinstance(event, TaskFailure):
            self._failed(col, event.key, event.kind, event.detail)
            return
        verdict = validate_update(
            event, task, col.inputs.manifest, self._config.validation,
            declared_examples=self._runtime.declared_examples(event.key.client),
        )  # fmt: skip
        if isinstance(verdict, Rejected):
            self.reject(col, event.key, verdict)
            self._replace(col, goal)
            return
        col.health[event.key.client] = self._health.success(col.health[event.key.client])
        try:
            outliers = col.pool.add(verdict)
        except MemoryBudgetError as error:
            col.record.reasons.append(str(error))
            return
        self._reject_outliers(col, outliers, goal)

    def reject(self, col: Collection, key: TaskKey, verdict: Rejected) -> None:
        """A refused update is final: recorded, held against the client, never retried."""
        now = self._runtime.clock.now()
        col.record.events.append(
            RoundEvent(
                key.client, key.attempt, FailureKind.REJECTED, now, verdict.detail, verdict.reason
            )
        )
        col.health[key.client] = self._health.failure(col.health[key.client], key.round)

    def _failed(self, col: Collection, key: TaskKey, kind: FailureKind, detail: str) -> None:
        now = self._runtime.clock.now()
        col.record.events.append(RoundEvent(key.client, key.attempt, kind, now, detail))
        health = self._health.failure(col.health[key.client], key.round)
        col.health[key.client] = health
        when = self._retry.next_attempt_at(
            kind, round_index=key.round, client=key.client, attempt=key.attempt,
            now=now, round_deadline=col.deadline,
        )  # fmt: skip
        if when is not None and health.state is not HealthState.SIDELINED:
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
        for key in list(col.active):
            self._runtime.cancel(key)
        col.record.cancelled = len(col.active) + len(col.retries)
        col.active.clear()
        col.retries.clear()
