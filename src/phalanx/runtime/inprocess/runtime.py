"""The embedded simulation runtime: virtual clients on one machine, on a virtual clock.

At submission each task's fate and timing are decided from the fault plan and the latency
model; its reply (or failure) becomes an event at a virtual time. Training is lazy and
batched: when the earliest pending reply is needed, it and the next few replies due are
trained together, so over-selected tasks that the engine cancels cost nothing.

Byzantine clients (``adversary``) train like the others; their attack replaces what they
send. A colluding attack needs the round's honest updates, so the first Byzantine delivery
of a round trains every reply of the round still due (``_train_round``).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import torch

from phalanx.config import RunConfig
from phalanx.core.messages import ClientUpdate, Event, TaskFailure, TaskKey, TrainTask
from phalanx.core.rng import torch_rng
from phalanx.core.tensors import Manifest, payload_digest, unflatten
from phalanx.engine.clock import VirtualClock
from phalanx.engine.membership import Roster
from phalanx.errors import RuntimeBackendError
from phalanx.faults import FaultDecision, FaultPlan, corrupt_tensors, flip_bits
from phalanx.runtime.inprocess.adversary import Adversary
from phalanx.runtime.inprocess.latency import LatencyModel
from phalanx.runtime.inprocess.trainers import LocalTrainer, TrainJob, TrainOutcome
from phalanx.types import Corruption, FailureKind, FaultKind


@dataclass
class _Pending:
    task: TrainTask
    due: float
    kind: FailureKind | None  # None: an update is due; else the failure the transport sees
    decision: FaultDecision | None
    steps: int
    total_steps: int
    outcome: TrainOutcome | None = None


class SimulationRuntime:
    def __init__(
        self,
        config: RunConfig,
        trainer: LocalTrainer,
        manifest: Manifest,
        *,
        num_clients: int,
        clock: VirtualClock | None = None,
    ) -> None:
        self._config = config
        self._trainer = trainer
        self._manifest = manifest
        self._num_clients = num_clients
        self._clock = clock or VirtualClock()
        self._latency = LatencyModel(config.latency, seed=config.seed, num_clients=num_clients)
        self.plan = FaultPlan(config.faults, seed=config.seed)
        self.adversary = Adversary.of(config, manifest, num_clients)
        self._pending: dict[TaskKey, _Pending] = {}
        self._queue: list[tuple[float, int, TaskKey]] = []  # (due, submission order, key)
        self._submitted = 0
        # A fixed population, live from the start; clients declare their example counts.
        self.membership = Roster(range(num_clients), declared=trainer.num_examples)

    @property
    def clock(self) -> VirtualClock:
        return self._clock

    async def close(self, timeout_s: float = 10.0) -> None:
        self._pending.clear()
        self._queue.clear()

    def cancel(self, key: TaskKey) -> None:
        self._pending.pop(key, None)

    def submit(self, task: TrainTask) -> None:
        key = task.key
        if self.adversary is not None:
            self.adversary.dispatched(task)
        decision = self.plan.decide(key)
        if decision is not None:
            self.plan.record(key, decision)
        kind = decision.kind if decision else None
        timing = self._latency.timing(key, straggling=kind is FaultKind.STRAGGLE)
        total = self._trainer.total_steps(key.client)
        steps = total
        partial = self._config.partial_work
        if partial.enabled and task.issued_at + timing.duration(total) > task.deadline:
            fits = timing.steps_within(task.deadline - task.issued_at)
            if fits >= math.ceil(partial.min_fraction * total):
                steps = fits
        due = task.issued_at + timing.duration(steps)
        failure: FailureKind | None = None
        if kind is FaultKind.HANG:
            return  # never replies; the engine's deadline finds out
        if kind is FaultKind.CRASH:
            fraction = decision.fraction if decision else 0.5
            due = task.issued_at + fraction * timing.duration(steps)
            due += self._config.latency.crash_detect_s
            failure = FailureKind.CRASH
        elif kind is FaultKind.DROP:
            due += self._config.latency.crash_detect_s
            failure = FailureKind.DROP
        self._pending[key] = _Pending(task, due, failure, decision, steps, total)
        heapq.heappush(self._queue, (due, self._submitted, key))
        self._submitted += 1

    async def next_event(self, until: float) -> Event | None:
        while self._queue and self._queue[0][0] <= until:
            due, _, key = heapq.heappop(self._queue)
            pending = self._pending.pop(key, None)
            if pending is None:
                continue  # cancelled
            self._clock.advance_to(due)
            return self._deliver(pending)
        self._clock.advance_to(until)
        return None

    def _deliver(self, pending: _Pending) -> Event:
        key = pending.task.key
        if pending.kind is not None:
            return TaskFailure(key, pending.kind, f"injected {pending.kind.value}")
        if pending.outcome is None:
            self._train_due(pending)
        outcome = pending.outcome
        if outcome is None:
            raise RuntimeBackendError(f"trainer returned no outcome for {key}")
        if outcome.tensors is None:
            error = outcome.error or "crash: no result"
            kind = FailureKind.TIMEOUT if error.startswith("hang") else FailureKind.CRASH
            return TaskFailure(key, kind, error)
        return self._as_update(pending, outcome)

    def _due_updates(self, params: torch.Tensor) -> list[_Pending]:
        """Pending replies on the model ``params`` that will be updates, in order due."""
        due = (self._pending.get(key) for _, _, key in sorted(self._queue))
        return [p for p in due if p and p.kind is None and p.task.params is params]

    def _train_due(self, first: _Pending) -> None:
        """Train ``first`` together with the next replies due on the same model."""
        width = self._config.selection.clients_per_round
        others = [p for p in self._due_updates(first.task.params) if p.outcome is None]
        self._train_batch([first, *others[: width - 1]])

    def _train_batch(self, batch: list[_Pending]) -> None:
        jobs = [TrainJob(p.task.key, p.steps) for p in batch]
        params = batch[0].task.params
        for pending, outcome in zip(batch, self._trainer.train(params, jobs), strict=True):
            pending.outcome = outcome

    def _train_round(self, task: TrainTask) -> list[tuple[TaskKey, dict[str, torch.Tensor]]]:
        """The genuine weights of every update still due on ``task``'s model, training the
        untrained ones now in batches of a round's width: what colluders get to see."""
        due = self._due_updates(task.params)
        todo = [p for p in due if p.outcome is None]
        width = self._config.selection.clients_per_round
        for start in range(0, len(todo), width):
            self._train_batch(todo[start : start + width])
        return [(p.task.key, p.outcome.tensors) for p in due if p.outcome and p.outcome.tensors]

    def _as_update(self, pending: _Pending, outcome: TrainOutcome) -> ClientUpdate:
        task, decision = pending.task, pending.decision
        key = task.key
        tensors = outcome.tensors or {}
        if self.adversary is not None:
            tensors = self.adversary.send(task, tensors, lambda: self._train_round(task))
            if self.adversary.is_byzantine(key.client):
                self.plan.record_attack(key, self.adversary.attack.name)
        corruption = decision.corruption if decision else None
        if corruption is None:
            checksum = payload_digest(tensors)
        else:
            tensors, checksum = self._corrupt(task, tensors, corruption)
        return ClientUpdate(
            key=key,
            model_version=task.model_version,
            tensors=tensors,
            num_examples=outcome.num_examples,
            work_fraction=pending.steps / max(pending.total_steps, 1),
            checksum=checksum,
            metrics=outcome.metrics,
        )

    def _corrupt(
        self, task: TrainTask, tensors: dict[str, torch.Tensor], corruption: Corruption
    ) -> tuple[dict[str, torch.Tensor], str]:
        """(damaged tensors, the checksum the client sends): a client that damages its own
        update checksums the damage; a bit flip in transit happens after the checksum."""
        key, faults = task.key, self._config.faults
        rng = torch_rng(self._config.seed, "corrupt", key.round, key.client, key.attempt)
        if corruption is Corruption.BITFLIP:
            return flip_bits(tensors, generator=rng), payload_digest(tensors)
        damaged = corrupt_tensors(
            tensors, unflatten(task.params, self._manifest), corruption, generator=rng,
            noise_std=faults.noise_std, scale=faults.scale,
        )  # fmt: skip
        return damaged, payload_digest(damaged)
