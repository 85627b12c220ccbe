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
from phalanx.checkpoint.layout import HISTORY_FILE
from phalanx.client.sdk import UserTrainFn
from phalanx.config import RunConfig
from phalanx.coordinator import (
    History,
    HistoryLog,
    MemoryHistory,
    RunDirectory,
    RunInterrupted,
    RunLifecycle,
    StopSignals,
)
from phalanx.coordinator.lifecycle import RunRound
from phalanx.core.models import ModelBook
from phalanx.core.rng import derive_seed
from phalanx.core.state import ServerState
from phalanx.core.tensors import Manifest, flatten
from phalanx.engine.engine import Engine, Evaluate, RoundHook
from phalanx.errors import ConfigError, WorkloadError
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


def _out_of_memory(exc: BaseException) -> WorkloadError:
    return WorkloadError(
        f"out of memory: the model or data do not fit in memory ({str(exc).strip()}); shrink "
        "the workload (e.g. workload.hidden, workload.num_clients)"
    )


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
        try:
            if model is None or clients is None:
                workload = build_workload(config.workload, config.seed)
                model, clients, test = workload.make_model, workload.clients, workload.test
                shape = (workload.num_classes, workload.image_shape)
            else:
                config = config.for_clients(len(clients))
            self.config = config
            self._aggregator = build_aggregator(config.aggregation)  # bad names fail early
            self.model = initial_model(model, config.seed)
        except MemoryError as exc:
            raise _out_of_memory(exc) from None
        except RuntimeError as exc:  # torch's allocator failing is a RuntimeError
            if "alloc" not in str(exc):
                raise
            raise _out_of_memory(exc) from None
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
        # The built-in evaluators keep their own copy of the model, so a round's evaluation
        # may run while the next round trains (``Engine.defer_evaluation``); a user's
        # ``evaluate`` may share state with training, and runs before the next round.
        self._evaluation_overlaps = evaluate is None
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
        run_dir: Path | RunDirectory | None = None,
        checkpoint_dir: Path | None = None,
        resume: bool = False,
        on_round: Sequence[RoundHook] = (),
    ) -> RunResult:
        """Run to the configured last round; see ``run_async``.

        SIGINT or SIGTERM (in the main thread) stops the run: the round in flight is
        abandoned, everything is closed, and ``RunInterrupted`` (a ``KeyboardInterrupt``
        whose ``result`` holds what committed) is raised. A second signal stops at once.
        """
        with StopSignals() as signals:
            return asyncio.run(
                self.run_async(
                    run_dir=run_dir,
                    checkpoint_dir=checkpoint_dir,
                    resume=resume,
                    on_round=on_round,
                    signals=signals,
                )
            )

    async def run_async(
        self,
        *,
        run_dir: Path | RunDirectory | None = None,
        checkpoint_dir: Path | None = None,
        resume: bool = False,
        on_round: Sequence[RoundHook] = (),
        signals: StopSignals | None = None,
    ) -> RunResult:
        """Run the rounds, committing each before ``on_round`` hears of it.

        ``run_dir`` is a run directory (locked; checkpoints in ``run_dir/checkpoints``,
        history in ``run_dir/history.jsonl``; a new run refuses one that holds a run).
        ``checkpoint_dir`` alone is a checkpoint store root that also keeps the history log.
        ``resume`` continues from the newest checkpoint of this configuration, and refuses
        (``CheckpointError``) when there is none.
        """
        if run_dir is not None and checkpoint_dir is not None:
            raise ConfigError("give run_dir or checkpoint_dir, not both")
        directory = run_dir if isinstance(run_dir, RunDirectory) else None
        if isinstance(run_dir, Path):
            directory = RunDirectory(
                run_dir, mode="resume" if resume else "new", threads=torch.get_num_threads()
            )
        try:
            if directory is not None:
                directory.acquire()
            return await self._run(directory, checkpoint_dir, resume, on_round, signals)
        finally:
            if directory is not None:
                directory.release()
            self.close()

    async def _run(
        self,
        directory: RunDirectory | None,
        checkpoint_dir: Path | None,
        resume: bool,
        on_round: Sequence[RoundHook],
        signals: StopSignals | None,
    ) -> RunResult:
        root = directory.checkpoints if directory else checkpoint_dir
        history = self._history(directory, checkpoint_dir)
        # Relative replica paths made absolute once, here, so that config.json names the
        # stores a resume from another directory must reach (outside the trajectory digest).
        config = self.config.model_copy(
            update={"checkpoint": self.config.checkpoint.resolved(Path.cwd())}
        )
        lifecycle = RunLifecycle(
            config, store=self._store(config, root), history=history, observers=on_round
        )
        models = ModelBook(self.manifest)  # the engine publishes, the runtime resolves
        runtime = SimulationRuntime(
            self.config, self._trainer, self.manifest,
            num_clients=len(self.clients), models=models,
        )  # fmt: skip
        engine = Engine(
            self.config, runtime, membership=runtime.membership, aggregator=self._aggregator,
            evaluate=self._evaluate, models=models, round_faults=runtime.plan.fired,
            run_id=directory.run_id if directory is not None else None,
        )  # fmt: skip
        engine.defer_evaluation = self._evaluation_overlaps
        where = str(directory.path if directory else root)
        try:
            initial = engine.initial_state(self.initial_params, self.manifest)
            state = lifecycle.start(initial, resume=resume, where=where)
            if directory is not None:
                directory.begin(config, resumed_at=state.round if resume else None)
            runtime.clock.advance_to(state.clock)
            prepare = getattr(self._trainer, "prepare", None)
            if callable(prepare):  # workers start now, not on the first round's clock
                prepare()
            start = time.perf_counter()
            task = asyncio.current_task()
            if signals is not None and task is not None:
                signals.attach(task)
            try:
                state = await lifecycle.run(
                    self._run_round(engine, runtime), state, evaluations=engine
                )
            except (asyncio.CancelledError, KeyboardInterrupt):
                if signals is None or signals.signum is None or signals.forced:
                    raise
                committed = lifecycle.state or state
                result = self._result(committed, history, runtime, time.perf_counter() - start)
                raise RunInterrupted(signals.signum, result) from None
            return self._result(state, history, runtime, time.perf_counter() - start)
        finally:
            await runtime.close()
            engine.close()
            lifecycle.close()

    @staticmethod
    def _run_round(engine: Engine, runtime: SimulationRuntime) -> RunRound:
        """The engine's round; colluders hear of each round's public server state first."""
        adversary = runtime.adversary
        return engine.run_round if adversary is None else adversary.watching(engine.run_round)

    @staticmethod
    def _result(
        state: ServerState, history: History, runtime: SimulationRuntime, elapsed: float
    ) -> RunResult:
        counts = dict(runtime.plan.counts)
        return RunResult(state, history.records(), elapsed, counts, runtime.training)

    @staticmethod
    def _history(directory: RunDirectory | None, checkpoint_dir: Path | None) -> History:
        if directory is not None:
            return HistoryLog(directory.history)
        if checkpoint_dir is not None:
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            return HistoryLog(checkpoint_dir / HISTORY_FILE)
        return MemoryHistory()

    @staticmethod
    def _store(config: RunConfig, root: Path | None) -> CheckpointStore | None:
        if root is None or config.checkpoint.every == 0:
            return None
        # A save that misses its write quorum raises out of the commit step, so the run
        # stops loudly and never reports that round as committed.
        return build_store(config.checkpoint, root)
