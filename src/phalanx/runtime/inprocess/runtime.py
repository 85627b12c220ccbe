"""The embedded simulation runtime: virtual clients on one machine, on a virtual clock.

At submission each task's fate and timing are decided from the fault plan and the latency
model, and the client's partial-work decision (``client.partial``) fixes its steps; its
reply (or failure) becomes an event at a virtual time. What the reply *is* comes from the
client package: each delivery composes the task's client from an honest one and the fault
wrappers its decision calls for (``client.faults``), and asks it to train.

Training is lazy and batched: when the earliest pending reply needs its honest weights, it
and the next few replies due on the same model are trained together, so over-selected tasks
that the engine cancels cost nothing. Tasks name their model by reference; the runtime
resolves it in the ``ModelBook`` the engine publishes to.

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
from phalanx.runtime.inprocess.trainers import LocalTrainer, TrainJob
from phalanx.types import FailureKind, FaultKind


@dataclass
class _Pending:
    task: TrainTask
    due: float
    kind: FailureKind | None  # None: an update is due; else the failure the transport sees
    decision: FaultDecision | None
    steps: int
    total_steps: int
    outcome: Trained | ClientFault | None = None  # the honest result, once trained


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
        """Ask the task's client for its reply; the transport stamps who sent it."""
        task = pending.task
        reply = self._client(pending).train(task, self.models.get(task.model))
        if isinstance(reply, ClientFault):
            return TaskFailure(task.key, reply.kind, reply.detail)
        if self.adversary is not None and self.adversary.is_byzantine(task.key.client):
            self.plan.record_attack(task.key, self.adversary.attack.name)
        return replace(reply, sender=task.key.client)

    def _client(self, pending: _Pending) -> Client:
        """The task's client: honest, seen or replaced by the adversary, then faulty as the
        plan decided (a straggler is only slow: that is timing, not behaviour)."""
        task, decision, adversary = pending.task, pending.decision, self.adversary
        client: Client = HonestClient(task.key.client, lambda _t, _m: self._honest(pending))
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

    def _honest(self, pending: _Pending) -> Trained | ClientFault:
        """The honest client's training: its share of a batch, trained now if not yet."""
        if pending.outcome is None:
            self._train_due(pending)
        if pending.outcome is None:
            raise RuntimeBackendError(f"trainer returned no outcome for {pending.task.key}")
        return pending.outcome

    def _due_updates(self, model: ModelRef) -> list[_Pending]:
        """Pending replies on ``model`` that will be updates, in order due."""
        due = (self._pending.get(key) for _, _, key in sorted(self._queue))
        return [p for p in due if p and p.kind is None and p.task.model == model]

    def _train_due(self, first: _Pending) -> None:
        """Train ``first`` together with the next replies due on the same model."""
        width = self._config.selection.clients_per_round
        others = [p for p in self._due_updates(first.task.model) if p.outcome is None]
        self._train_batch([first, *others[: width - 1]])

    def _train_batch(self, batch: list[_Pending]) -> None:
        jobs = [TrainJob(p.task.key, p.steps) for p in batch]
        params = self.models.get(batch[0].task.model).params
        for pending, outcome in zip(batch, self._trainer.train(params, jobs), strict=True):
            if outcome.tensors is None:
                error = outcome.error or "crash: no result"
                kind = FailureKind.TIMEOUT if error.startswith("hang") else FailureKind.CRASH
                pending.outcome = ClientFault(kind, error)
            else:
                pending.outcome = Trained(
                    outcome.tensors, outcome.num_examples, pending.steps, pending.total_steps,
                    outcome.metrics,
                )  # fmt: skip

    def _train_round(self, task: TrainTask) -> list[tuple[TaskKey, dict[str, torch.Tensor]]]:
        """The genuine weights of every update still due on ``task``'s model, training the
        untrained ones now in batches of a round's width: what colluders get to see."""
        due = self._due_updates(task.model)
        todo = [p for p in due if p.outcome is None]
        width = self._config.selection.clients_per_round
        for start in range(0, len(todo), width):
            self._train_batch(todo[start : start + width])
        return [(p.task.key, p.outcome.tensors) for p in due if isinstance(p.outcome, Trained)]
