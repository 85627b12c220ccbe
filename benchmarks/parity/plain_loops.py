"""Plain-PyTorch baselines for the seed scenario, without faults.

Two loops do the *same* training as the seed program with no failures, so they say what
the scenario costs with no framework at all:

- :func:`train_client_by_client`: the obvious loop (deepcopy the global model, SGD over
  each client in turn, FedAvg of state dicts). What a careful user writes by hand.
- :func:`train_batched`: the floor. All of a round's clients train at once, their
  parameters stacked along a leading client dimension (``torch.baddbmm``), one
  ``autograd.grad`` and one in-place SGD step per batch for every client together.

Both draw client selection and every per-epoch permutation from the same generator, in the
same order, so they perform the same arithmetic up to float summation order, and their
final accuracies agree; that cross-check is what makes the floor trustworthy.

Data follows the seed recipe: per client ``x ~ randn``, ``y ~ randint``, then
``x[i, y_i % features] += shift``; the test set comes from its own generator. Timing
(``train_s``) spans the first round to the last, evaluation after every round included
(the seed evaluates every round too); data and model set-up are excluded.

Run as ``python -m benchmarks.parity.plain_loops client|batched`` it prints one JSON line.
Nothing here imports phalanx, and phalanx must not import this.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class Recipe:
    """The seed scenario's numbers (FaultConfig defaults and FaultDataset's recipe)."""

    num_clients: int = 20
    samples_per_client: int = 200
    test_samples: int = 300
    features: int = 32
    hidden: int = 64
    classes: int = 10
    shift: float = 2.0
    rounds: int = 50
    clients_per_round: int = 10
    local_epochs: int = 3
    batch_size: int = 32
    lr: float = 0.01
    seed: int = 42
    test_seed: int = 999


@dataclass(frozen=True)
class FederatedData:
    """All clients' data stacked (equal sizes): ``x`` is clients x n x d, ``y`` clients x n."""

    x: Tensor
    y: Tensor
    test_x: Tensor
    test_y: Tensor


@dataclass(frozen=True)
class LoopResult:
    """What a baseline reports: training-only seconds and final test accuracy."""

    train_s: float
    accuracy: float

    def to_json(self) -> str:
        return json.dumps({"train_s": self.train_s, "accuracy": self.accuracy})


def _shifted_samples(n: int, recipe: Recipe, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """One client's (or the test set's) samples, drawn in the seed's order (x, then y)."""
    x = torch.randn(n, recipe.features, generator=gen)
    y = torch.randint(0, recipe.classes, (n,), generator=gen)
    x[torch.arange(n), y % recipe.features] += recipe.shift
    return x, y


def make_data(recipe: Recipe) -> FederatedData:
    """Client data from one generator seeded like the seed's; the test set from its own."""
    gen = torch.Generator().manual_seed(recipe.seed)
    n = recipe.samples_per_client
    parts = [_shifted_samples(n, recipe, gen) for _ in range(recipe.num_clients)]
    test_gen = torch.Generator().manual_seed(recipe.test_seed)
    test_x, test_y = _shifted_samples(recipe.test_samples, recipe, test_gen)
    return FederatedData(
        x=torch.stack([p[0] for p in parts]),
        y=torch.stack([p[1] for p in parts]),
        test_x=test_x,
        test_y=test_y,
    )


def make_model(recipe: Recipe) -> nn.Sequential:
    """The seed's MLP, initialised from ``recipe.seed`` without touching global RNG state."""
    with torch.random.fork_rng():
        torch.manual_seed(recipe.seed)
        return nn.Sequential(
            nn.Linear(recipe.features, recipe.hidden),
            nn.ReLU(),
            nn.Linear(recipe.hidden, recipe.classes),
        )


def draw_round(recipe: Recipe, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Selected client ids (k) and their permutations (k x epochs x n), one draw per round.

    Both loops call this once per round, so they see identical selections and batch orders.
    """
    chosen = torch.randperm(recipe.num_clients, generator=gen)[: recipe.clients_per_round]
    keys = torch.rand(
        recipe.clients_per_round,
        recipe.local_epochs,
        recipe.samples_per_client,
        generator=gen,
    )
    return chosen, keys.argsort(dim=-1)


def _accuracy(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(dim=1) == labels).float().mean())


# --- client by client --------------------------------------------------------------------


def _local_sgd(model: nn.Module, x: Tensor, y: Tensor, perms: Tensor, recipe: Recipe) -> None:
    """Plain local training: SGD over mini-batches of an in-memory permutation per epoch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr)
    model.train()
    for perm in perms:
        for start in range(0, perm.numel(), recipe.batch_size):
            idx = perm[start : start + recipe.batch_size]
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x[idx]), y[idx])
            torch.autograd.backward(loss)
            optimizer.step()


def _fedavg(states: list[dict[str, Tensor]], weights: Tensor) -> dict[str, Tensor]:
    """Sample-weighted average of state dicts (weights already sum to one)."""
    return {
        key: torch.tensordot(weights, torch.stack([s[key] for s in states]), dims=1)
        for key in states[0]
    }


def train_client_by_client(recipe: Recipe | None = None) -> LoopResult:
    """The obvious FedAvg loop: each selected client trains a copy in turn, then average."""
    recipe = recipe or Recipe()
    data, model = make_data(recipe), make_model(recipe)
    gen = torch.Generator().manual_seed(recipe.seed + 1)
    accuracy = 0.0
    start = time.perf_counter()
    for _ in range(recipe.rounds):
        chosen, perms = draw_round(recipe, gen)
        states = []
        for k, client in enumerate(chosen.tolist()):
            local = copy.deepcopy(model)
            _local_sgd(local, data.x[client], data.y[client], perms[k], recipe)
            states.append(local.state_dict())
        sizes = torch.full((len(states),), float(recipe.samples_per_client))
        model.load_state_dict(_fedavg(states, sizes / sizes.sum()))
        model.eval()
        with torch.inference_mode():
            accuracy = _accuracy(model(data.test_x), data.test_y)
    return LoopResult(train_s=time.perf_counter() - start, accuracy=accuracy)


# --- batched floor -----------------------------------------------------------------------
#
# Layout: "feature-major". Each client's weights keep nn.Linear's (out, in) orientation and
# a batch is (features, batch), so a layer is baddbmm(bias, W, x) and the logits come out
# as clients x classes x batch. cross_entropy then reduces over a non-last class dimension,
# which on CPU is several times faster than over the last dimension of size 10 (measured:
# the row-major layout took ~1.6x longer per step). Data for a whole round is gathered and
# transposed in one index_select, so mini-batches are plain slices.


def _stacked_params(model: nn.Sequential, k: int) -> list[Tensor]:
    """Global parameters copied to ``k`` clients: W1 (k,H,D), b1 (k,H,1), W2 (k,C,H), b2."""
    first, second = cast(nn.Linear, model[0]), cast(nn.Linear, model[2])
    layout = [first.weight, first.bias[:, None], second.weight, second.bias[:, None]]
    return [p.detach().expand(k, *p.shape).clone().requires_grad_(True) for p in layout]


def _round_batches(data: FederatedData, chosen: Tensor, perms: Tensor) -> tuple[Tensor, Tensor]:
    """Every epoch's shuffled data for the chosen clients: x (k,E,D,n), y (k,E,n)."""
    k, epochs, n = perms.shape
    rows = (chosen[:, None, None] * n + perms).flatten()
    x = data.x.flatten(0, 1).index_select(0, rows).view(k, epochs, n, -1)
    y = data.y.flatten().index_select(0, rows).view(k, epochs, n)
    return x.transpose(2, 3).contiguous(), y


def _batched_local_sgd(params: list[Tensor], x: Tensor, y: Tensor, lr: float, bs: int) -> None:
    """Local SGD for all clients at once, one autograd.grad and one step per batch.

    The loss is the sum over clients of each client's batch-mean cross-entropy, so the
    gradient with respect to client i's slice is exactly client i's own gradient.
    """
    w1, b1, w2, b2 = params
    for epoch in range(x.shape[1]):
        for start in range(0, x.shape[-1], bs):
            xb, yb = x[:, epoch, :, start : start + bs], y[:, epoch, start : start + bs]
            hidden = torch.baddbmm(b1, w1, xb).relu_()
            logits = torch.baddbmm(b2, w2, hidden)
            loss = F.cross_entropy(logits, yb, reduction="sum") / yb.shape[1]
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                torch._foreach_add_(params, grads, alpha=-lr)


def _average_into(model: nn.Sequential, params: list[Tensor], weights: Tensor) -> None:
    """Weighted FedAvg of the stacked parameters, written back into the global model."""
    w1, b1, w2, b2 = (torch.tensordot(weights, p.detach(), dims=1) for p in params)
    first, second = cast(nn.Linear, model[0]), cast(nn.Linear, model[2])
    with torch.no_grad():
        first.weight.copy_(w1)
        first.bias.copy_(b1[:, 0])
        second.weight.copy_(w2)
        second.bias.copy_(b2[:, 0])


def train_batched(recipe: Recipe | None = None) -> LoopResult:
    """The floor: same training as :func:`train_client_by_client`, clients stacked."""
    recipe = recipe or Recipe()
    data, model = make_data(recipe), make_model(recipe)
    gen = torch.Generator().manual_seed(recipe.seed + 1)
    sizes = torch.full((recipe.clients_per_round,), float(recipe.samples_per_client))
    weights = sizes / sizes.sum()
    accuracy = 0.0
    start = time.perf_counter()
    for _ in range(recipe.rounds):
        chosen, perms = draw_round(recipe, gen)
        params = _stacked_params(model, recipe.clients_per_round)
        x, y = _round_batches(data, chosen, perms)
        _batched_local_sgd(params, x, y, recipe.lr, recipe.batch_size)
        _average_into(model, params, weights)
        with torch.inference_mode():
            accuracy = _accuracy(model(data.test_x), data.test_y)
    return LoopResult(train_s=time.perf_counter() - start, accuracy=accuracy)


LOOPS: dict[str, Callable[[Recipe | None], LoopResult]] = {
    "client": train_client_by_client,
    "batched": train_batched,
}


def main(argv: list[str]) -> int:
    """Script entry: pin threads to one, run the named loop, print one JSON line."""
    if len(argv) != 1 or argv[0] not in LOOPS:
        print(
            f"usage: python -m benchmarks.parity.plain_loops {{{'|'.join(LOOPS)}}}", file=sys.stderr
        )
        return 2
    torch.set_num_threads(1)
    print(LOOPS[argv[0]](None).to_json(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
