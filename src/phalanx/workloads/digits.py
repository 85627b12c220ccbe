"""scikit-learn's bundled 8x8 digits (1,797 images, no download) split across clients.

The label-Dirichlet split is the usual way to make clients non-IID: for each class, client
shares are drawn from Dirichlet(alpha * 1), so a small alpha gives each client a few classes
and a large one approaches the IID split. A split that leaves a client with fewer than
``min_samples`` examples is re-drawn from a fresh derived stream, a bounded number of times.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

from phalanx.config import DigitsWorkload
from phalanx.core.rng import numpy_rng
from phalanx.errors import WorkloadError
from phalanx.workloads.base import Workload, client_data
from phalanx.workloads.models import mlp

Indices = npt.NDArray[np.int64]
MAX_DRAWS = 100
FEATURES = 64
CLASSES = 10


@functools.cache
def _digits() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Pixels scaled to [0, 1] and labels; read once per process, then read-only."""
    from sklearn.datasets import load_digits  # imported here: 0.8 s, digits only

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    x.flags.writeable = y.flags.writeable = False
    return x, y


def stratified_split(
    labels: Indices, test_fraction: float, rng: np.random.Generator
) -> tuple[Indices, Indices]:
    """(train, test) indices with each class split by ``test_fraction``."""
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = round(len(members) * test_fraction)
        test.append(members[:cut])
        train.append(members[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def iid_partition(n: int, num_clients: int, rng: np.random.Generator) -> list[Indices]:
    """A shuffle of ``range(n)`` cut into ``num_clients`` parts differing by at most one."""
    return list(np.array_split(rng.permutation(n), num_clients))


def dirichlet_partition(
    labels: Indices, num_clients: int, alpha: float, rng: np.random.Generator
) -> list[Indices]:
    """Positions into ``labels``, each class cut across clients by Dirichlet proportions."""
    parts: list[list[Indices]] = [[] for _ in range(num_clients)]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        shares = rng.dirichlet(np.full(num_clients, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
        for client, piece in enumerate(np.split(members, cuts)):
            parts[client].append(piece)
    # Shuffled, so a client's examples are not ordered by class.
    return [rng.permutation(np.concatenate(pieces)) for pieces in parts]


def partition(
    labels: Indices, *, num_clients: int, alpha: float | None, min_samples: int, seed: int
) -> list[Indices]:
    """Every position of ``labels`` assigned to exactly one of ``num_clients`` clients, each
    with at least ``min_samples``; IID when ``alpha`` is None. Draw ``t`` uses stream
    ("workload.digits.partition", t), so the result depends on ``seed`` alone."""
    n = len(labels)

    def impossible(why: str) -> WorkloadError:
        return WorkloadError(
            f"cannot give each of num_clients={num_clients} clients min_samples={min_samples} "
            f"of {n} training examples with dirichlet_alpha={alpha}: {why}"
        )

    if alpha is None:
        if n // num_clients < min_samples:
            raise impossible(f"an even split gives only {n // num_clients} per client")
        return iid_partition(n, num_clients, numpy_rng(seed, "workload.digits.partition", 0))
    if num_clients * min_samples > n:
        raise impossible(f"needs n >= num_clients * min_samples = {num_clients * min_samples}")
    for draw in range(MAX_DRAWS):
        rng = numpy_rng(seed, "workload.digits.partition", draw)
        parts = dirichlet_partition(labels, num_clients, alpha, rng)
        if min(len(part) for part in parts) >= min_samples:
            return parts
    raise impossible(
        f"no draw out of {MAX_DRAWS} met min_samples; raise dirichlet_alpha or lower min_samples"
    )


def build_digits(config: DigitsWorkload, seed: int) -> Workload:
    """Globally stratified train/test split (stream "workload.digits.split"), then the
    training part partitioned across clients; the test set stays whole on the server."""
    x, y = _digits()
    train, test = stratified_split(
        y, config.test_fraction, numpy_rng(seed, "workload.digits.split")
    )
    parts = partition(
        y[train],
        num_clients=config.num_clients,
        alpha=config.dirichlet_alpha,
        min_samples=config.min_samples,
        seed=seed,
    )
    return Workload(
        name=config.name,
        clients=tuple(client_data(x[train[p]], y[train[p]]) for p in parts),
        test=client_data(x[test], y[test]),
        make_model=functools.partial(mlp, FEATURES, config.hidden, CLASSES),
        num_classes=CLASSES,
        image_shape=(8, 8),
    )
