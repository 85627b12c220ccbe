"""The stacked trainer computes, for each client, what that client would compute alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from phalanx.config import TrainingConfig
from phalanx.core.messages import TaskKey
from phalanx.core.tensors import Manifest, flatten
from phalanx.runtime.inprocess.trainers import BatchedTrainer, PaddedClients, TrainJob
from phalanx.training.batched import BatchedSGD, ClientBatch
from phalanx.training.stacked import StackedModel
from phalanx.workloads.base import ClientData


def model_and_params(*layers: nn.Module) -> tuple[nn.Module, Manifest, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(*layers)
    tensors = {n: p.detach() for n, p in model.named_parameters()}
    manifest = Manifest.of(tensors)
    return model, manifest, flatten(tensors, manifest)


@pytest.mark.parametrize("activation", [nn.ReLU, nn.Tanh, nn.Sigmoid])
def test_hand_written_backward_matches_autograd(activation: type[nn.Module]) -> None:
    model, manifest, params = model_and_params(nn.Linear(5, 7), activation(), nn.Linear(7, 3))
    stacked = StackedModel(model, manifest)
    assert stacked.manual_backward
    k, batch = 3, 6
    x = torch.randn(k, 5, batch)
    y = torch.randint(0, 3, (k, batch))
    leaves = stacked.leaves(params, k)
    reference = [t.clone().requires_grad_() for t in leaves]
    logits = StackedModel._forward(reference, x, stacked._plan or [])[-1]  # type: ignore[arg-type]
    loss = nn.functional.cross_entropy(logits, y, reduction="sum") / batch
    grads = torch.autograd.grad(loss, reference)
    per_sample = stacked.sgd_step(leaves, x, y, 1.0 / batch, lr=0.1)
    for leaf, ref, grad in zip(leaves, reference, grads, strict=True):
        assert torch.allclose(leaf, ref.detach() - 0.1 * grad, atol=1e-6)
    expected = nn.functional.cross_entropy(logits, y, reduction="none")
    assert torch.allclose(per_sample, expected.detach(), atol=1e-6)


@pytest.mark.parametrize(
    "layers",
    [
        (nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)),  # hand-written backward
        (nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 3)),  # baddbmm forward, autograd backward
        (nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 3)),  # vmap fallback
    ],
)
def test_a_client_trains_the_same_alone_or_in_a_batch(layers: tuple[nn.Module, ...]) -> None:
    model, manifest, params = model_and_params(*layers)
    sgd = BatchedSGD(model, manifest, TrainingConfig(local_epochs=2, batch_size=4, lr=0.1))
    x = torch.randn(3, 10, 4)
    y = torch.randint(0, 3, (3, 10))
    n = torch.tensor([10, 7, 9])  # unequal sizes: masks
    limits = torch.tensor([100, 100, 3])  # the last client stops after 3 steps

    def gens() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(s) for s in (1, 2, 3)]

    together, _, steps = sgd.train(params, ClientBatch(x, y, n), limits, gens())
    assert steps.tolist() == [6, 4, 3]
    for i in range(3):
        alone, _, _ = sgd.train(
            params, ClientBatch(x[i : i + 1], y[i : i + 1], n[i : i + 1]), limits[i : i + 1],
            [gens()[i]],
        )  # fmt: skip
        assert torch.allclose(together[i], alone[0], atol=1e-6)


def test_plain_loop_reference_for_one_client() -> None:
    """The stacked trainer equals a textbook per-client SGD loop."""
    model, manifest, params = model_and_params(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    config = TrainingConfig(local_epochs=1, batch_size=3, lr=0.2)
    x, y = torch.randn(1, 7, 4), torch.randint(0, 3, (1, 7))
    generator = torch.Generator().manual_seed(5)
    flat, _, _ = BatchedSGD(model, manifest, config).train(
        params, ClientBatch(x, y, torch.tensor([7])), torch.tensor([100]), [generator]
    )
    order = torch.randperm(7, generator=torch.Generator().manual_seed(5))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    for start in range(0, 7, 3):
        index = order[start : start + 3]
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[0, index]), y[0, index]).backward()
        optimizer.step()
    trained = flatten({n: p.detach() for n, p in model.named_parameters()}, manifest)
    assert torch.allclose(flat[0], trained, atol=1e-6)


def test_clients_that_are_rows_of_one_buffer_are_used_without_a_copy() -> None:
    buffer_x, buffer_y = torch.randn(12, 3), torch.arange(12)
    rows = [
        ClientData(buffer_x[i * 4 : (i + 1) * 4], buffer_y[i * 4 : (i + 1) * 4]) for i in range(3)
    ]
    padded = PaddedClients(rows)
    assert padded.x.data_ptr() == buffer_x.data_ptr() and padded.y.data_ptr() == buffer_y.data_ptr()
    assert padded.x.shape == (3, 4, 3) and padded.n.tolist() == [4, 4, 4]
    batch = padded.select([2, 0])
    assert torch.equal(batch.x[0], rows[2].x) and torch.equal(batch.y[1], rows[0].y)


def test_other_clients_are_copied_into_a_zero_padded_buffer() -> None:
    buffer_x, buffer_y = torch.randn(12, 3), torch.arange(12)
    out_of_order = [
        ClientData(buffer_x[i * 4 : (i + 1) * 4], buffer_y[i * 4 : (i + 1) * 4]) for i in (1, 0, 2)
    ]
    uneven = [ClientData(torch.randn(n, 3), torch.zeros(n, dtype=torch.long)) for n in (2, 5)]
    for clients in (out_of_order, uneven):
        padded = PaddedClients(clients)
        assert padded.x.data_ptr() != buffer_x.data_ptr()
        for i, client in enumerate(clients):
            assert torch.equal(padded.x[i, : len(client)], client.x)
            assert torch.equal(padded.y[i, : len(client)], client.y)
            assert not padded.x[i, len(client) :].any()


def seed_like_trainer(
    *, batched: bool = True, max_batch_bytes: int | None = None
) -> BatchedTrainer:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    sizes = (10, 7, 9, 10, 4)  # unequal: some batches take the masked path, some not
    clients = [ClientData(torch.randn(n, 4), torch.randint(0, 3, (n,))) for n in sizes]
    config = TrainingConfig(local_epochs=2, batch_size=4, lr=0.1)
    manifest = Manifest.of({n: p.detach() for n, p in model.named_parameters()})
    return BatchedTrainer(
        model, manifest, clients, config, seed=3, batched=batched, max_batch_bytes=max_batch_bytes
    )


def test_a_clients_result_is_bit_identical_whatever_batch_it_trains_in() -> None:
    """The memory bound splits a round into narrower batches; that must not change one bit
    of any client's weights (each client's data order is its own generator's)."""
    trainer = seed_like_trainer()
    params = torch.randn(4 * 16 + 16 + 16 * 3 + 3)
    jobs = [TrainJob(TaskKey(0, c, 1), 3 if c == 2 else 100) for c in range(5)]  # 2: partial
    whole = trainer.train(params, jobs)
    for width in (1, 2, 3):
        parts = [
            out
            for start in range(0, 5, width)
            for out in trainer.train(params, jobs[start : start + width])
        ]
        for a, b in zip(whole, parts, strict=True):
            assert a.tensors is not None and b.tensors is not None
            for name in a.tensors:
                assert torch.equal(a.tensors[name], b.tensors[name])


def test_the_batch_width_follows_the_memory_budget() -> None:
    unbounded = seed_like_trainer()
    assert unbounded.max_batch == 5  # no budget: every client
    share = unbounded._sgd.bytes_per_client(unbounded._data.x[0, 0], 10)
    # 4 d + 2 x (16 + 16 + 3 outputs) x batch 4 + 2 x 10 examples x 4 features, in bytes
    d = 4 * 16 + 16 + 16 * 3 + 3
    assert share == 4 * (4 * d + 2 * 35 * 4 + 2 * 10 * 4)
    assert seed_like_trainer(max_batch_bytes=3 * share + 1).max_batch == 3
    assert seed_like_trainer(max_batch_bytes=1).max_batch == 1  # never below one client
    assert seed_like_trainer(max_batch_bytes=100 * share).max_batch == 5
    assert seed_like_trainer(batched=False, max_batch_bytes=100 * share).max_batch == 1


def test_activations_are_counted_for_any_module_without_moving_its_statistics() -> None:
    """The vmap path's models (here a conv net with batch norm) are measured by one forward
    pass in eval mode: every leaf module's output for one example, running stats untouched."""
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    )
    manifest = Manifest.of({n: p.detach() for n, p in model.named_parameters()})
    before = model[1].running_mean.clone()
    floats = StackedModel(model, manifest).activation_floats(torch.randn(1, 8, 8))
    assert floats == 3 * (4 * 6 * 6) + 4 * 6 * 6 + 3  # conv, norm, relu; flatten; linear
    assert torch.equal(model[1].running_mean, before) and model.training
