"""A user's own training function: real worker processes, a real wall-clock hang guard."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Mapping
from typing import Any

import pytest
import torch
from torch import nn

from phalanx.client.reload import ReloadedCopy
from phalanx.client.sdk import TrainContext, float_metrics
from phalanx.config import RunConfig, build_config
from phalanx.core.messages import TaskKey
from phalanx.core.tensors import flatten
from phalanx.errors import ConfigError
from phalanx.runtime.inprocess import trainers
from phalanx.runtime.inprocess.trainers import BatchedTrainer, TrainJob, WorkerTrainer
from phalanx.simulation import Simulation, initial_model, model_manifest
from phalanx.workloads import build_workload
from phalanx.workloads.base import ClientData

TINY: dict[str, Any] = {
    "name": "user-training",
    "seed": 5,
    "rounds": 2,
    "workload": {"name": "seed", "num_clients": 4, "samples_per_client": 40, "test_samples": 60},
    "training": {"local_epochs": 1, "batch_size": 16, "lr": 0.1},
    "selection": {"clients_per_round": 3},
    "quorum": {"min_updates": 2},
    "checkpoint": {"every": 0},
    "faults": {"enabled": False},
    "simulation": {"workers": 2, "hang_guard_s": 1.0},
}


def tiny(*overrides: str) -> RunConfig:
    return build_config(TINY, list(overrides))


def sgd(model: nn.Module, data: ClientData, ctx: TrainContext) -> Mapping[str, float]:
    """Plain minibatch SGD that shuffles with ctx.generator and stops at ctx.max_steps."""
    optimiser = torch.optim.SGD(model.parameters(), lr=ctx.config.lr)
    losses: list[float] = []
    for _ in range(ctx.config.local_epochs):
        for batch in torch.randperm(len(data), generator=ctx.generator).split(
            ctx.config.batch_size
        ):
            if len(losses) >= ctx.max_steps:
                break
            loss = nn.functional.cross_entropy(model(data.x[batch]), data.y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
    return {"loss": sum(losses) / max(len(losses), 1)}


def events(history: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for record in history for e in record["events"] if e["kind"] == kind]


@pytest.mark.timeout(60)
def test_user_function_trains_the_model_and_accuracy_is_reported() -> None:
    sim = Simulation(tiny(), train=sgd)
    result = sim.run()
    assert [r["committed"] for r in result.history] == [True, True]
    assert not torch.equal(result.params, sim.initial_params)
    assert all(0.0 <= r["metrics"]["accuracy"] <= 1.0 for r in result.history)
    assert multiprocessing.active_children() == []


@pytest.mark.timeout(60)
def test_runs_are_bit_identical_including_dropout_and_a_reused_simulation() -> None:
    config = tiny()
    workload = build_workload(config.workload, config.seed)

    def make_model() -> nn.Module:  # dropout draws from torch's global generator
        return nn.Sequential(nn.Linear(32, 24), nn.ReLU(), nn.Dropout(0.3), nn.Linear(24, 10))

    def simulation() -> Simulation:
        return Simulation(
            config, model=make_model, clients=workload.clients, test=workload.test, train=sgd
        )

    reused = simulation()
    with torch.random.fork_rng(devices=[]):  # the parent's global generator must not matter
        torch.manual_seed(1)
        first = reused.run()
        torch.manual_seed(2)
        again = reused.run()  # the closed pool is started afresh
        other = simulation().run()
    assert not torch.equal(first.params, reused.initial_params)
    assert torch.equal(first.params, again.params)
    assert torch.equal(first.params, other.params)
    assert multiprocessing.active_children() == []


@pytest.mark.timeout(60)
def test_with_20_percent_faults_no_trained_update_is_thrown_away() -> None:
    config = tiny(
        "rounds=6", "workload.num_clients=12", "selection.clients_per_round=5",
        "faults.enabled=true", "faults.rules=[{rate=0.2}]",
    )  # fmt: skip
    result = Simulation(config, train=sgd).run()
    assert sum(r["cancelled"] for r in result.history) > 0  # over-selected tasks were dropped
    assert sum(len(r["events"]) for r in result.history) > 0  # and faults did fire
    assert result.training.trained >= sum(len(r["accepted"]) for r in result.history) > 0
    assert result.training.thrown_away == 0


@pytest.mark.timeout(60)
def test_in_process_training_gives_the_same_model_as_workers() -> None:
    faults = ("faults.enabled=true", "faults.rules=[{rate=0.2}]", "rounds=3")
    in_process = Simulation(tiny(*faults, "simulation.workers=0"), train=sgd).run()
    forked = Simulation(tiny(*faults), train=sgd).run()
    assert torch.equal(in_process.params, forked.params)
    assert [r["accepted"] for r in in_process.history] == [r["accepted"] for r in forked.history]
    assert in_process.training == forked.training


@pytest.mark.timeout(60)
def test_a_hung_client_is_killed_and_reported_as_a_timeout_while_the_round_commits() -> None:
    def hangs_on_client_1(model: nn.Module, data: ClientData, ctx: TrainContext) -> None:
        if ctx.client == 1:
            time.sleep(60)
        sgd(model, data, ctx)

    config = tiny("workload.num_clients=3", "selection.over_selection=1.0")
    start = time.monotonic()
    result = Simulation(config, train=hangs_on_client_1).run()
    assert time.monotonic() - start < 20.0
    timeouts = events(result.history, "timeout")
    assert timeouts and {e["client"] for e in timeouts} == {1}
    assert all(e["detail"].startswith("hang: no reply within 1 s") for e in timeouts)
    for record in result.history:
        assert record["committed"]
        assert sorted(record["accepted"]) == [0, 2]
    assert multiprocessing.active_children() == []


@pytest.mark.timeout(60)
def test_a_raising_client_is_a_crash_with_its_message_and_the_round_commits() -> None:
    def raises_on_client_2(model: nn.Module, data: ClientData, ctx: TrainContext) -> None:
        if ctx.client == 2:
            raise RuntimeError(f"client 2 exploded in round {ctx.round}")
        sgd(model, data, ctx)

    config = tiny("workload.num_clients=3", "selection.over_selection=1.0", "rounds=1")
    result = Simulation(config, train=raises_on_client_2).run()
    crashes = events(result.history, "crash")
    assert crashes and {e["client"] for e in crashes} == {2}
    assert "RuntimeError: client 2 exploded in round 0" in crashes[0]["detail"]
    (record,) = result.history
    assert record["committed"] and sorted(record["accepted"]) == [0, 1]
    assert multiprocessing.active_children() == []


@pytest.mark.timeout(60)
def test_worker_trainer_passes_the_context_and_keeps_float_metrics() -> None:
    config = tiny()
    workload = build_workload(config.workload, config.seed)
    model = initial_model(workload.make_model, config.seed)
    params, manifest = model_manifest(model)

    def report(model: nn.Module, data: ClientData, ctx: TrainContext) -> Any:  # not all floats
        return {
            "client": ctx.client, "round": ctx.round, "attempt": ctx.attempt,
            "max_steps": ctx.max_steps, "total_steps": ctx.total_steps,
            "examples": len(data), "lr": ctx.config.lr, "training": model.training,
            "draw": torch.rand(1, generator=ctx.generator), "note": "not a number",
        }  # fmt: skip

    with WorkerTrainer(model, manifest, workload.clients, report, config) as trainer:
        assert trainer.total_steps(0) == 3 and trainer.num_examples(0) == 40  # ceil(40/16)
        (out,) = trainer.train(params, [TrainJob(TaskKey(round=4, client=3, attempt=1), 2)])
    assert out.error is None and out.tensors is not None and out.num_examples == 40
    assert torch.equal(flatten(out.tensors, manifest), params)  # untrained: unchanged
    assert out.metrics.pop("draw") == pytest.approx(0.0, abs=1.0)
    assert out.metrics == {
        "client": 3.0, "round": 4.0, "attempt": 1.0, "max_steps": 2.0, "total_steps": 3.0,
        "examples": 40.0, "lr": 0.1, "training": 1.0,
    }  # fmt: skip
    assert multiprocessing.active_children() == []


@pytest.mark.timeout(60)
def test_prepare_settles_the_heap_before_it_forks_the_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Off the first round's clock, and inherited frozen by every worker (engine/heap.py)."""
    config = tiny()
    workload = build_workload(config.workload, config.seed)
    model = initial_model(workload.make_model, config.seed)
    _, manifest = model_manifest(model)
    calls: list[str] = []
    monkeypatch.setattr(trainers, "settle_long_lived", lambda: calls.append("settle") or True)
    start = trainers.WorkerPool.start
    monkeypatch.setattr(
        trainers.WorkerPool, "start", lambda pool: (calls.append("fork"), start(pool))[1]
    )
    with WorkerTrainer(model, manifest, workload.clients, sgd, config) as trainer:
        trainer.prepare()
        assert calls == ["settle", "fork"]
        assert len(multiprocessing.active_children()) == config.simulation.workers
    assert multiprocessing.active_children() == []


@pytest.mark.timeout(60)
def test_a_non_mapping_return_is_an_error_outcome() -> None:
    config = tiny()
    workload = build_workload(config.workload, config.seed)
    model = initial_model(workload.make_model, config.seed)
    params, manifest = model_manifest(model)

    def returns_a_tuple(model: nn.Module, data: ClientData, ctx: TrainContext) -> Any:
        return (1.0, 2.0)

    with WorkerTrainer(model, manifest, workload.clients, returns_a_tuple, config) as trainer:
        (out,) = trainer.train(params, [TrainJob(TaskKey(0, 0, 0), 3)])
    assert out.tensors is None
    assert out.error == (
        "error: TypeError: train function must return a mapping of metrics or None; got tuple"
    )


def test_float_metrics_keeps_numbers_and_drops_the_rest() -> None:
    raw = {"a": 1, "b": 2.5, "c": torch.tensor(3.0), "d": "x", "e": torch.ones(2), "f": True}
    assert float_metrics(raw) == {"a": 1.0, "b": 2.5, "c": 3.0, "f": 1.0}
    assert float_metrics(None) == {}


def test_trainer_choice_follows_the_keywords() -> None:
    config = tiny()
    assert isinstance(Simulation(config)._trainer, BatchedTrainer)
    with Simulation(config, train=sgd) as sim:
        assert isinstance(sim._trainer, WorkerTrainer)
        assert not sim.model.training  # the template is evaluated, never trained itself
    with pytest.raises(ConfigError, match="not both"):
        Simulation(
            config,
            train=sgd,
            trainer=lambda m, man: BatchedTrainer(m, man, [], config.training, seed=0),
        )


def _reloaded_cnn() -> tuple[ReloadedCopy, nn.Module, dict[str, torch.Tensor]]:
    template = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Dropout(0.25)).eval()
    params = {name: torch.full_like(p, 0.5) for name, p in template.named_parameters()}
    return ReloadedCopy(template), template, params


def test_a_reloaded_copy_starts_every_attempt_as_a_fresh_copy_would() -> None:
    copies, template, params = _reloaded_cnn()
    model = copies.load(params)
    model(torch.randn(8, 4)).sum().backward()  # moves BatchNorm's statistics, leaves grads
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model[0].bias.requires_grad_(False)
    copies.release(model)
    again = copies.load(params)
    assert again is model  # reused: nothing a reload misses was changed
    assert again.training and all(p.grad is None and p.requires_grad for p in again.parameters())
    for name, p in again.named_parameters():
        assert torch.equal(p, params[name])
    for buffer, initial in zip(again.buffers(), template.buffers(), strict=True):
        assert torch.equal(buffer, initial)


class FrozenNorm(nn.Sequential):
    """A model whose ``train()`` keeps its BatchNorm in eval mode: its own idea of training."""

    def train(self, mode: bool = True) -> FrozenNorm:
        super().train(mode)
        self[1].eval()
        return self


def test_a_copy_left_in_eval_mode_is_reused_in_training_mode_as_its_train_defines() -> None:
    copies, _, params = _reloaded_cnn()
    model = copies.load(params)
    model.eval()
    copies.release(model)
    again = copies.load(params)
    assert again is model and all(m.training for m in again.modules())
    frozen = FrozenNorm(nn.Linear(4, 3), nn.BatchNorm1d(3)).eval()
    copies = ReloadedCopy(frozen)
    for _ in range(2):
        model = copies.load(params)
        assert model[0].training and not model[1].training
        model.eval()
        copies.release(model)


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.register_forward_hook(lambda *args: None),
        lambda m: m[0].weight.register_hook(lambda grad: grad),
        lambda m: setattr(m, "optimiser_state", {"momentum": 1}),
        lambda m: setattr(m[2], "p", 0.9),
        lambda m: m.add_module("extra", nn.ReLU()),
        lambda m: setattr(m[0], "weight", nn.Parameter(torch.zeros(3, 4))),
    ],
    ids=["module hook", "tensor hook", "attribute", "setting", "submodule", "parameter"],
)
def test_an_attempt_that_changes_the_model_beyond_a_reload_gets_a_fresh_copy_next(
    change: Any,
) -> None:
    copies, _, params = _reloaded_cnn()
    model = copies.load(params)
    change(model)
    copies.release(model)
    fresh = copies.load(params)
    assert fresh is not model
    assert not fresh._forward_hooks and fresh[2].p == 0.25 and len(fresh) == 3


def test_a_model_holding_plain_tensors_is_deep_copied_for_every_attempt() -> None:
    template = nn.Linear(2, 2)
    template.mask = torch.ones(2)  # neither parameter nor buffer: a reload could not restore it
    copies = ReloadedCopy(template)
    params = {name: p.detach().clone() for name, p in template.named_parameters()}
    first = copies.load(params)
    copies.release(first)
    assert copies.load(params) is not first
