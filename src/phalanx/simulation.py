"""Run a federated job in the embedded simulation: the engine, a simulated client pool, the
fault plan, checkpoints and the run's outputs, wired together.

This is the user API: give a config, a model factory and per-client data (or let a built-in
workload provide them) and call ``run``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from phalanx.aggregation import build_aggregator
from phalanx.checkpoint import CheckpointStore, build_store
from phalanx.checkpoint.crashpoints import crash_point
from phalanx.client.sdk import UserTrainFn
from phalanx.config import RunConfig
from phalanx.core.models import ModelBook
from phalanx.core.rng import derive_seed
from phalanx.core.state import ServerState
from phalanx.core.tensors import Manifest, flatten
from phalanx.engine.clock import VirtualClock
from phalanx.engine.engine import Engine, Evaluate, RoundHook, config_digest
from phalanx.engine.history import RoundRecord
from phalanx.errors import CheckpointError, ConfigError
from phalanx.evaluation import backdoor_evaluator, classification_evaluator, combine_evaluators
from phalanx.faults.byzantine import build_attack, byzantine_clients
from phalanx.faults.poisoning import Backdoor, DataAttack, infer_data_shape, poison_clients
from phalanx.runtime.inprocess.runtime import SimulationRuntime, TrainingCounts
from phalanx.runtime.inprocess.trainers import BatchedTrainer, LocalTrainer, WorkerTrainer
from phalanx.workloads import build_workload
from phalanx.workloads.base import ClientData

log = logging.getLogger("phalanx.simulation")

ModelFactory = Callable[[], nn.Module]


@dataclass
class RunResult:
    state: ServerState
    history: list[dict[str, Any]]
    train_time_s: float
    faults_fired: dict[str, int] = field(default_factory=dict)
    training: TrainingCounts = field(default_factory=TrainingCounts)  # trained, thrown away

    @property
    def params(self) -> torch.Tensor:
        return self.state.params


def initial_model(make_model: ModelFactory, seed: int) -> nn.Module:
    """The model's initial weights depend on the seed only, not on global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init"))
        return make_model()


def model_manifest(model: nn.Module) -> tuple[torch.Tensor, Manifest]:
    tensors = {name: p.detach() for name, p in model.named_parameters()}
    manifest = Manifest.of(tensors)
    return flatten(tensors, manifest), manifest


class Simulation:
    """A simulated federation: ``Simulation(config, model=..., clients=..., test=...).run()``.

    With no model or clients the config's built-in workload supplies them. Training is the
    built-in batched SGD, unless ``train=`` gives a function ``train(model, data, ctx)``
    (see ``TrainContext``): that runs per client in ``simulation.workers`` worker processes,
    each attempt killed after ``simulation.hang_guard_s`` real seconds.

    ``faults.byzantine`` makes some clients Byzantine (``byzantine``): a data-poisoning
    attack poisons their examples here, before any trainer sees them (``clients`` holds the
    data as trained); a backdoor adds ``backdoor_asr`` to the round metrics.
    """

    def __init__(
        self,
        config: RunConfig,
        *,
        model: ModelFactory | None = None,
        clients: Sequence[ClientData] | None = None,
        test: ClientData | None = None,
        evaluate: Evaluate | None = None,
        trainer: Callable[[nn.Module, Manifest], LocalTrainer] | None = None,
        train: UserTrainFn | None = None,
    ) -> None:
        if (model is None) != (clients is None):
            raise ConfigError("give both model and clients, or neither (to use the workload)")
        if trainer is not None and train is not None:
            raise ConfigError(
                "give trainer (a LocalTrainer factory) or train (a function), not both"
            )
        shape: tuple[int, tuple[int, int] | None] | None = None  # (classes, image shape)
        if model is None or clients is None:
            workload = build_workload(config.workload, config.seed)
            model, clients, test = workload.make_model, workload.clients, workload.test
            shape = (workload.num_classes, workload.image_shape)
        else:
            config = config.for_clients(len(clients))
        self.config = config
        self._aggregator = build_aggregator(config.aggregation)  # bad names fail here, early
        self.model = initial_model(model, config.seed)
        if train is not None:
            # The template is what the server evaluates: dropout off, deterministic. Each
            # worker trains a copy that it switches back to training mode.
            self.model.eval()
        self.initial_params, self.manifest = model_manifest(self.model)
        self.byzantine = byzantine_clients(config.faults.byzantine, len(clients), config.seed)
        self.clients, asr = self._poison(list(clients), test, shape, trainer is not None)
        accuracy = evaluate or (
            classification_evaluator(self.model, self.manifest, test) if test is not None else None
        )
        self._evaluate = combine_evaluators(accuracy, asr) if accuracy and asr else accuracy or asr
        self._trainer = self._make_trainer(trainer, train)

    def _poison(
        self,
        clients: list[ClientData],
        test: ClientData | None,
        shape: tuple[int, tuple[int, int] | None] | None,
        custom_trainer: bool,
    ) -> tuple[list[ClientData], Evaluate | None]:
        """The clients' data as they train on it (a data attack's Byzantine clients poisoned)
        and, for a backdoor with a test set, the evaluator of its success rate."""
        attack = build_attack(self.config.faults.byzantine)
        if not isinstance(attack, DataAttack) or not self.byzantine:
            return clients, None
        if custom_trainer:
            raise ConfigError(
                f"attack {attack.name!r} poisons the clients' data, which a trainer= factory "
                "keeps to itself: use the built-in trainer or train="
            )
        num_classes, image_shape = shape or infer_data_shape(clients, test)
        attack = attack.resolve(clients, self.byzantine)
        poisoned = poison_clients(
            clients, self.byzantine, attack, num_classes=num_classes,
            image_shape=image_shape, seed=self.config.seed,
        )  # fmt: skip
        if not (isinstance(attack, Backdoor) and test is not None and image_shape is not None):
            return poisoned, None
        return poisoned, backdoor_evaluator(
            self.model, self.manifest, test, image_shape=image_shape,
            trigger_size=attack.trigger_size, value=attack.value or 0.0, target=attack.target,
        )  # fmt: skip

    def _make_trainer(
        self,
        trainer: Callable[[nn.Module, Manifest], LocalTrainer] | None,
        train: UserTrainFn | None,
    ) -> LocalTrainer:
        if trainer is not None:
            return trainer(self.model, self.manifest)
        if train is not None:
            return WorkerTrainer(self.model, self.manifest, self.clients, train, self.config)
        return BatchedTrainer(
            self.model, self.manifest, self.clients, self.config.training,
            seed=self.config.seed, batched=self.config.simulation.batched,
            max_batch_bytes=self.config.simulation.max_batch_bytes,
        )  # fmt: skip

    def close(self) -> None:
        """Release what the trainer holds (a user function's worker processes).

        ``run`` already does this when it ends; a later ``run`` starts new workers.
        """
        close = getattr(self._trainer, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> Simulation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run(
        self,
        *,
        checkpoint_dir: Path | None = None,
        resume: bool = False,
        on_round: Sequence[RoundHook] = (),
    ) -> RunResult:
        return asyncio.run(
            self.run_async(checkpoint_dir=checkpoint_dir, resume=resume, on_round=on_round)
        )

    async def run_async(
        self,
        *,
        checkpoint_dir: Path | None = None,
        resume: bool = False,
        on_round: Sequence[RoundHook] = (),
    ) -> RunResult:
        store = self._store(checkpoint_dir)
        state = self._resume_state(store) if resume and store else None
        clock = VirtualClock(state.clock if state else 0.0)
        models = ModelBook(self.manifest)  # the engine publishes, the runtime resolves
        runtime = SimulationRuntime(
            self.config, self._trainer, self.manifest,
            num_clients=len(self.clients), clock=clock, models=models,
        )  # fmt: skip
        hooks = [*on_round, *([self._checkpoint_hook(store)] if store else [])]
        engine = Engine(
            self.config, runtime, membership=runtime.membership, aggregator=self._aggregator,
            evaluate=self._evaluate, on_round=hooks, models=models,
            round_faults=runtime.plan.fired,
        )  # fmt: skip
        state = state or engine.initial_state(self.initial_params, self.manifest)
        start = time.perf_counter()
        try:
            state = await engine.run(state)
        finally:
            await runtime.close()
            self.close()
        elapsed = time.perf_counter() - start
        return RunResult(
            state, list(state.history), elapsed, dict(runtime.plan.counts), runtime.training
        )

    def _store(self, checkpoint_dir: Path | None) -> CheckpointStore | None:
        if checkpoint_dir is None or self.config.checkpoint.every == 0:
            return None
        # A save that misses its write quorum raises out of the round hook, so the run
        # stops loudly and never reports that round as committed.
        return build_store(self.config.checkpoint, checkpoint_dir)

    def _resume_state(self, store: CheckpointStore) -> ServerState | None:
        state = store.latest_valid()
        if state is None:
            log.info("no checkpoint to resume from; starting at round 0")
            return None
        if state.config_digest != config_digest(self.config):
            raise CheckpointError(
                f"checkpoint at round {state.round} was made with another configuration "
                f"(digest {state.config_digest}, now {config_digest(self.config)}); "
                "resume with the same scenario and overrides"
            )
        log.info("resuming at round %s (model version %s)", state.round, state.model_version)
        return state

    def _checkpoint_hook(self, store: CheckpointStore) -> RoundHook:
        every = self.config.checkpoint.every
        last = self.config.rounds

        def save(state: ServerState, record: RoundRecord) -> None:
            if state.round % every == 0 or state.round == last:
                crash_point("engine.before_checkpoint")
                store.save(state)

        return save
