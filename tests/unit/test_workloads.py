"""Built-in workloads: determinism, shapes, the statistics each task promises, the Dirichlet
partition's invariants and the registry's errors."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from phalanx.config import DigitsWorkload, SeedWorkload, SyntheticWorkload, build_config
from phalanx.core.rng import numpy_rng
from phalanx.errors import ConfigError, WorkloadError
from phalanx.workloads import WORKLOADS, Workload, build_workload, mlp, workload_builder
from phalanx.workloads.base import ClientData
from phalanx.workloads.digits import partition
from phalanx.workloads.synthetic import client_size, synthetic_client

SMALL = [
    SeedWorkload(num_clients=3, samples_per_client=20, test_samples=30, features=4, classes=3),
    SyntheticWorkload(num_clients=4, features=5, classes=3, max_samples=120),
    DigitsWorkload(num_clients=5, dirichlet_alpha=0.5),
    DigitsWorkload(num_clients=5, dirichlet_alpha=None),
]


def tensors(workload: Workload) -> list[torch.Tensor]:
    parts = [*workload.clients, workload.test]
    return [t for part in parts for t in (part.x, part.y)]


def label_entropy(y: torch.Tensor, classes: int) -> float:
    p = torch.bincount(y, minlength=classes).double() / len(y)
    p = p[p > 0]
    return float(-(p * p.log()).sum())


# --- every workload ----------------------------------------------------------------------


@pytest.mark.parametrize("config", SMALL, ids=lambda c: f"{c.name}")
def test_same_seed_gives_identical_tensors(config: object) -> None:
    first, second = build_workload(config, 7), build_workload(config, 7)  # type: ignore[arg-type]

    assert all(torch.equal(a, b) for a, b in zip(tensors(first), tensors(second), strict=True))


@pytest.mark.parametrize("config", SMALL, ids=lambda c: f"{c.name}")
def test_different_seed_gives_different_data(config: object) -> None:
    first, second = build_workload(config, 7), build_workload(config, 8)  # type: ignore[arg-type]

    assert not torch.equal(first.clients[0].x, second.clients[0].x)


@pytest.mark.parametrize("config", SMALL, ids=lambda c: f"{c.name}")
def test_shapes_dtypes_and_model(config: object) -> None:
    workload = build_workload(config, 0)  # type: ignore[arg-type]
    features = workload.test.x.shape[1]

    assert workload.name == config.name  # type: ignore[attr-defined]
    assert len(workload.clients) == config.num_clients  # type: ignore[attr-defined]
    for part in [*workload.clients, workload.test]:
        assert part.x.dtype == torch.float32 and part.y.dtype == torch.int64
        assert part.x.shape == (len(part), features) and part.y.shape == (len(part),)
        assert part.x.is_contiguous() and part.y.is_contiguous()
        assert int(part.y.min()) >= 0 and int(part.y.max()) < workload.num_classes
    model = workload.make_model()
    assert model(workload.test.x).shape == (len(workload.test), workload.num_classes)
    assert workload.make_model() is not model
    pickle.dumps(workload.make_model)  # worker processes receive the factory


def test_mlp_parameter_names_are_stable() -> None:
    assert [n for n, _ in mlp(4, 3, 2).named_parameters()] == [
        "0.weight",
        "0.bias",
        "2.weight",
        "2.bias",
    ]
    assert [n for n, _ in mlp(4, 0, 2).named_parameters()] == ["0.weight", "0.bias"]


def test_client_data_rejects_mismatched_lengths() -> None:
    with pytest.raises(WorkloadError, match=r"\(3, 2\).*\(2,\)"):
        ClientData(torch.zeros(3, 2), torch.zeros(2, dtype=torch.int64))


# --- seed ------------------------------------------------------------------------------------


def test_seed_task_shifts_the_class_feature() -> None:
    config = SeedWorkload(num_clients=2, samples_per_client=400, features=4, classes=6, shift=3.0)
    data = build_workload(config, 1).clients[0]
    rows = torch.arange(len(data))

    shifted = data.x[rows, data.y % 4]
    other = data.x[rows, (data.y + 1) % 4]

    assert abs(float(shifted.mean()) - 3.0) < 0.2
    assert abs(float(other.mean())) < 0.2


def test_seed_clients_do_not_depend_on_client_count() -> None:
    few = build_workload(SeedWorkload(num_clients=2, samples_per_client=10), 3)
    many = build_workload(SeedWorkload(num_clients=5, samples_per_client=10), 3)

    assert torch.equal(few.clients[1].x, many.clients[1].x)
    assert torch.equal(few.test.x, many.test.x)


# --- synthetic -------------------------------------------------------------------------------


def test_synthetic_sizes_within_bounds() -> None:
    rng = numpy_rng(0, "test")
    sizes = [client_size(rng, 60, 300) for _ in range(200)]

    assert min(sizes) == 60 and max(sizes) == 300  # the power law hits both clips


def test_synthetic_splits_each_client_and_pools_the_test_parts() -> None:
    config = SyntheticWorkload(num_clients=3, min_samples=100, max_samples=100)
    workload = build_workload(config, 0)

    assert [len(c) for c in workload.clients] == [80, 80, 80]
    assert len(workload.test) == 60


def test_synthetic_feature_variance_decays() -> None:
    config = SyntheticWorkload(features=60, min_samples=2000, max_samples=2000)
    x, y = synthetic_client(numpy_rng(0, "test"), config)

    assert x.shape == (2000, 60) and y.shape == (2000,)
    assert 0.9 < x[:, 0].var() < 1.1  # Sigma_11 = 1
    assert 0.006 < x[:, -1].var() < 0.009  # Sigma_60,60 = 60^-1.2 ~ 0.0074


def test_synthetic_rejects_inverted_bounds() -> None:
    with pytest.raises(WorkloadError, match="min_samples=90, max_samples=80"):
        build_workload(SyntheticWorkload(min_samples=90, max_samples=80), 0)


# --- digits ----------------------------------------------------------------------------------


def test_digits_split_sizes() -> None:
    workload = build_workload(DigitsWorkload(num_clients=4), 0)

    assert len(workload.test) == 359  # 20% of each class, rounded per class
    assert sum(len(c) for c in workload.clients) == 1797 - 359
    assert workload.test.x.shape[1] == 64 and float(workload.test.x.max()) == 1.0


def test_iid_partition_is_near_equal() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    parts = partition(labels, num_clients=3, alpha=None, min_samples=1, seed=0)

    assert [len(p) for p in parts] == [3, 3, 2]
    assert sorted(np.concatenate(parts).tolist()) == list(range(8))


@pytest.mark.parametrize("alpha", [None, 0.1, 1.0])
def test_partition_covers_each_index_once_with_min_samples(alpha: float | None) -> None:
    labels = np.repeat(np.arange(10), 50)
    parts = partition(labels, num_clients=8, alpha=alpha, min_samples=5, seed=4)

    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(500))
    assert min(len(p) for p in parts) >= 5


def test_dirichlet_split_is_skewed() -> None:
    def mean_entropy(alpha: float | None) -> float:
        config = DigitsWorkload(num_clients=10, dirichlet_alpha=alpha, min_samples=10)
        clients = build_workload(config, 0).clients
        return sum(label_entropy(c.y, 10) for c in clients) / len(clients)

    assert mean_entropy(None) > 2.2  # ln 10 ~ 2.30: every client sees every class
    assert mean_entropy(0.1) < 1.2


@pytest.mark.parametrize(
    ("clients", "alpha", "min_samples"),
    [(20, 0.5, 100), (20, None, 80), (10, 0.01, 140)],
)
def test_impossible_min_samples_raises_with_the_numbers(
    clients: int, alpha: float | None, min_samples: int
) -> None:
    config = DigitsWorkload(num_clients=clients, dirichlet_alpha=alpha, min_samples=min_samples)
    numbers = rf"num_clients={clients} .*min_samples={min_samples} .*dirichlet_alpha={alpha}"

    with pytest.raises(WorkloadError, match=numbers):
        build_workload(config, 0)


# --- registry --------------------------------------------------------------------------------


def test_registry_names_every_config_model() -> None:
    assert sorted(WORKLOADS) == ["digits", "fashion_mnist", "seed", "synthetic"]


def test_unknown_workload_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match="'mnist'; valid: digits, fashion_mnist, seed, synthetic"):
        workload_builder("mnist")
    with pytest.raises(ConfigError, match="'mnist'"):
        build_workload(SimpleNamespace(name="mnist"), 0)  # type: ignore[arg-type]


def test_config_rejects_unknown_workload_name() -> None:
    with pytest.raises(ConfigError, match="workload"):
        build_config({"workload": {"name": "mnist"}})
