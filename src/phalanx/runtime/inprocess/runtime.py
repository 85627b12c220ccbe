"""The embedded simulation runtime: virtual clients on one machine, on a virtual clock.

At submission each task's fate and timing are decided from the fault plan and the latency
model, and the client's partial-work decision (``client.partial``) fixes its steps; its
reply (or failure) becomes an event at a virtual time. What the reply *is* comes from the
client package: each delivery composes the task's client from an honest one and the fault
wrappers its decision calls for (``client.faults``), and asks it to train.

Training is lazy and batched: when the earliest pending reply needs its honest weights, it
and the next few replies due on the same model that the round can still accept are trained
together (``_batch``), so over-selected tasks that the engine cancels cost nothing; a batch
holds at most the trainer's ``max_batch`` (a memory bound), so the trained replies waiting
for delivery are few whatever the round's width. A reply
due after its task's deadline (submission time plus the task's ``ttl_s``, on this runtime's
clock: the engine's own timer) is a timeout, never trained. Tasks name their model by
reference; the runtime resolves it in the ``ModelBook`` the engine publishes to.

Byzantine clients train like the others; their attack replaces what they send. A colluding
attack needs the round's honest updates, so the first Byzantine delivery of a round trains
every reply of the round still due (``_train_round``).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, replace

import torch

from phalanx.client import (
    Adversary,
    Byzantine,
    Client,
    ClientFault,
    Corrupting,
    Crashing,
    Dropping,
    Hanging,
    HonestClient,
    Observed,
    Trained,
    steps_to_do,
)
from phalanx.config import RunConfig
from phalanx.core.messages import Event, ModelRef, TaskFailure, TaskKey, TrainTask
from phalanx.core.models import ModelBook
from phalanx.core.rng import torch_rng
from phalanx.core.tensors import Manifest
from phalanx.engine.clock import VirtualClock
from phalanx.engine.membership import Roster
from phalanx.errors import RuntimeBackendError
from phalanx.faults import FaultDecision, FaultPlan
from phalanx.runtime.inprocess.latency import LatencyModel
from phalanx.runtime.inprocess.trainers import (
    LocalTrainer,
    StartedJob,
    StartingTrainer,
    TrainJob,
    TrainOutcome,
    WidthBounded,
)
from phalanx.types import FailureKind, FaultKind


@dataclass
class TrainingCounts:
    """Updates the trainer computed, and how many of them were never delivered."""

    trained: int = 0
    thrown_away: int = 0


@dataclass
class _Pending:
    task: TrainTask
    due: float
    deadline: float  # the engine's timer for this task: submitted at + ttl_s
    kind: FailureKind | None  # None: an update is due; else the failure the transport sees
    decision: FaultDecision | None
    steps: int
    total_steps: int
    outcome: Trained | ClientFault | None = None  # the honest result, once trained
    started: StartedJob | None = None  # training under way (a StartingTrainer's job)

    @property
    def trained(self) -> bool:
        return self.outcome is not None or self.started is not None

    @property
    def late(self) -> bool:
        """An update due after the engine's timer for it: a timeout, never trained."""
        return self.kind is None and self.due > self.deadline

    def settle(self, outcome: TrainOutcome) -> None:
        """The trainer's outcome as the honest client's result."""
        if outcome.tensors is None:
            error = outcome.error or "crash: no result"
            kind = FailureKind.TIMEOUT if error.startswith("hang") else FailureKind.CRASH
            self.outcome = ClientFault(kind, error)
        else:
            self.outcome = Trained(
                outcome.tensors, outcome.num_examples, self.steps, self.total_steps,
                outcome.metrics,
            )  # fmt: skip

    def resolve(self) -> Trained | ClientFault | None:
        if self.outcome is None and self.started is not None:
            started, self.started = self.started, None
            self.settle(started.result())
        return self.outcome

    def drop(self) -> bool:
        """Forget this task's training; True if it had been trained (or started)."""
        trained = self.trained
        if self.started is not None:
            self.started.discard()
        return trained


class SimulationRuntime:
    def __init__(
        self,
        config: RunConfig,
        trainer: LocalTrainer,
        manifest: Manifest,
        *,
        num_clients: int,
        models: ModelBook,
        clock: VirtualClock | None = None,
    ) -> None:
        self._config = config
        self._trainer = trainer
        self._manifest = manifest
        self._num_clients = num_clients
        self._clock = clock or VirtualClock()
        self.models = models  # the engine publishes each round's model here; we resolve
        self._latency = LatencyModel(config.latency, seed=config.seed, num_clients=num_clients)
        self.plan = FaultPlan(config.faults, seed=config.seed)
        self.adversary = Adversary.of(config, manifest, num_clients)
        self._pending: dict[TaskKey, _Pending] = {}
        self._queue: list[tuple[float, int, TaskKey]] = []  # (due, submission order, key)
        self._submitted = 0
        self.training = TrainingCounts()
        self._delivered: dict[int, int] = {}  # updates delivered, by round (the newest only)
        # A fixed population, live from the start; clients declare their example counts.
        self.membership = Roster(range(num_clients), declared=trainer.num_examples)
        # The most replies trained at once (and so waiting for delivery at once): the
        # trainer's memory bound, else a round's width.
        width = config.selection.clients_per_round
        self._width = trainer.max_batch if isinstance(trainer, WidthBounded) else width

    @property
    def clock(self) -> VirtualClock:
        return self._clock

    async def close(self, timeout_s: float = 10.0) -> None:
        self.training.thrown_away += sum(p.drop() for p in self._pending.values())
        self._pending.clear()
        self._queue.clear()

    def cancel(self, key: TaskKey) -> None:
        pending = self._pending.pop(key, None)
        if pending is not None and pending.drop():
            self.training.thrown_away += 1

    def submit(self, task: TrainTask) -> None:
        key = task.key
        if self.adversary is not None:
            self.adversary.dispatched(task)
        decision = self.plan.decide(key)
        if decision is not None:
            self.plan.record(key, decision)
        kind = decision.kind if decision else None
        if kind is FaultKind.HANG:
            return  # never replies; the engine's deadline finds out
        timing = self._latency.timing(key, straggling=kind is FaultKind.STRAGGLE)
        total = self._trainer.total_steps(key.client)
        steps = steps_to_do(total, task.config.ttl_s, timing, task.config.partial)
        now = self._clock.now()
        due = now + timing.duration(steps)
        failure: FailureKind | None = None
        if kind is FaultKind.CRASH:
            fraction = decision.fraction if decision else 0.5
            due = now + fraction * timing.duration(steps) + self._config.latency.crash_detect_s
            failure = FailureKind.CRASH
        elif kind is FaultKind.DROP:
            due += self._config.latency.crash_detect_s
            failure = FailureKind.DROP
        deadline = now + task.config.ttl_s  # what the ttl means: the engine's timer
        self._pending[key] = _Pending(task, due, deadline, failure, decision, steps, total)
        heapq.heappush(self._queue, (due, self._submitted, key))
        self._submitted += 1

    async def next_event(self, until: float) -> Event | None:
        while self._queue and self._queue[0][0] <= until:
            due, _, key = heapq.heappop(self._queue)
            pending = self._pending.pop(key, None)
            if pending is None:
                continue  # cancelled
            self._clock.advance_to(due)
            return self._deliver(pending, until)
        self._clock.advance_to(until)
        return None

    def _deliver(self, pending: _Pending, until: float) -> Event:
        """Ask the task's client for its reply; the transport stamps who sent it. ``until``
        is the engine's next timer, which bounds what a batch trains (``_batch``)."""
        task = pending.task
        if pending.late:
            self.training.thrown_away += pending.drop()
            late = f"late: reply due at t={pending.due:.2f}, deadline t={pending.deadline:.2f}"
            return TaskFailure(task.key, FailureKind.TIMEOUT, late)
        reply = self._client(pending, until).train(task, self.models.get(task.model))
        if isinstance(reply, ClientFault):
            return TaskFailure(task.key, reply.kind, reply.detail)
        if self.adversary is not None and self.adversary.is_byzantine(task.key.client):
            self.plan.record_attack(task.key, self.adversary.attack.name)
        self._delivered = {task.key.round: self._delivered.get(task.key.round, 0) + 1}
        return replace(reply, sender=task.key.client)

    def _client(self, pending: _Pending, until: float) -> Client:
        """The task's client: honest, seen or replaced by the adversary, then faulty as the
        plan decided (a straggler is only slow: that is timing, not behaviour)."""
        task, decision, adversary = pending.task, pending.decision, self.adversary
        client: Client = HonestClient(task.key.client, lambda _t, _m: self._honest(pending, until))
        if adversary is not None and adversary.is_byzantine(task.key.client):
            client = Byzantine(client, adversary, lambda: self._train_round(task))
        elif adversary is not None:
            client = Observed(client, adversary)
        kind = decision.kind if decision else None
        if decision is None or kind is FaultKind.STRAGGLE:
            return client
        if kind is FaultKind.CRASH:
            return Crashing(client, decision.fraction)
        if kind is FaultKind.DROP:
            return Dropping(client)
        if kind is FaultKind.HANG:
            return Hanging(client)
        if decision.corruption is None:
            return client
        key, faults = task.key, self._config.faults
        rng = torch_rng(self._config.seed, "corrupt", key.round, key.client, key.attempt)
        return Corrupting(client, decision.corruption, rng, faults.noise_std, faults.scale)

    def _honest(self, pending: _Pending, until: float) -> Trained | ClientFault:
        """The honest client's training: its share of a batch, trained now if not yet."""
        if not pending.trained:
            self._train_batch(self._batch(pending, until))
        outcome = pending.resolve()
        if outcome is None:
            raise RuntimeBackendError(f"trainer returned no outcome for {pending.task.key}")
        return outcome

    def _batch(self, first: _Pending, until: float) -> list[_Pending]:
        """``first`` and the next untrained replies due by ``until``, as many as the round
        can still use for certain, and at most the trainer's width (``max_batch``: a batch's
        k trained updates wait here until delivered, so memory bounds k, not the round).

        The engine stops once it has ``clients_per_round`` accepted updates. Until ``until``
        (its next timer) it submits new tasks only in answer to events: at most one per
        failure (a retry or a replacement), and one per rejection (a replacement for an
        update that did not count). So a reply due by ``until`` is still wanted when the
        updates delivered this round, those trained and waiting, those batched before it
        and the failures due before it stay below the target; a batch of such replies is
        never thrown away. ``first`` is trained whatever: the engine asked for it.
        """
        round_index = first.task.key.round
        room = self._config.selection.clients_per_round - self._delivered.get(round_index, 0)
        ahead = [p for p in self._due(round_index) if p is not first and p.due <= until]
        room -= sum(p.trained for p in ahead)
        batch, failures = [first], 0
        for pending in ahead:
            if pending.kind is not None or pending.late:  # a failure (a late one: a timeout)
                failures += 1
            elif not pending.trained and pending.task.model == first.task.model:
                if len(batch) + failures >= room or len(batch) >= self._width:
                    break
                batch.append(pending)
        return batch

    def _due(self, round_index: int) -> list[_Pending]:
        """Pending tasks of round ``round_index``, in the order they are due."""
        due = (self._pending.get(key) for _, _, key in sorted(self._queue))
        return [p for p in due if p is not None and p.task.key.round == round_index]

    def _due_updates(self, model: ModelRef) -> list[_Pending]:
        """Pending replies on ``model`` that will be updates, in order due."""
        due = (self._pending.get(key) for _, _, key in sorted(self._queue))
        return [p for p in due if p and p.kind is None and p.task.model == model]

    def _train_batch(self, batch: list[_Pending]) -> None:
        jobs = [TrainJob(p.task.key, p.steps) for p in batch]
        params = self.models.get(batch[0].task.model).params
        if isinstance(self._trainer, StartingTrainer):
            for pending, started in zip(batch, self._trainer.start(params, jobs), strict=True):
                pending.started = started
        else:
            for pending, outcome in zip(batch, self._trainer.train(params, jobs), strict=True):
                pending.settle(outcome)
        self.training.trained += len(batch)

    def _train_round(self, task: TrainTask) -> list[tuple[TaskKey, dict[str, torch.Tensor]]]:
        """The genuine weights of every update still due on ``task``'s model, training the
        untrained ones now in batches of the trainer's width: what colluders get to see."""
        due = self._due_updates(task.model)
        todo = [p for p in due if not p.trained]
        for start in range(0, len(todo), self._width):
            self._train_batch(todo[start : start + self._width])
        outcomes = [(p.task.key, p.resolve()) for p in due]
        return [(key, out.tensors) for key, out in outcomes if isinstance(out, Trained)]
