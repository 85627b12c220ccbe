"""FedProx's Synthetic(alpha, beta) (Li et al., 2020, "Federated Optimization in
Heterogeneous Networks", section 5.1).

Client ``k`` has its own softmax model and its own feature distribution::

    u_k ~ N(0, alpha)     W_k, b_k entries ~ N(u_k, 1)     y = argmax(W_k x + b_k)
    B_k ~ N(0, beta)      v_k entries ~ N(B_k, 1)          x ~ N(v_k, Sigma), Sigma_jj = j^-1.2

``alpha`` controls how much the clients' models differ, ``beta`` how much their data does.
As in the authors' generator, ``alpha`` and ``beta`` are used as standard deviations. Sizes
follow the same power law, ``int(lognormal(4, 2)) + 50``, clipped to the configured bounds.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

from phalanx.config import SyntheticWorkload
from phalanx.core.rng import numpy_rng
from phalanx.errors import WorkloadError
from phalanx.workloads.base import ClientData, Workload, client_data
from phalanx.workloads.models import mlp

Array = npt.NDArray[np.float64]


def client_size(rng: np.random.Generator, min_samples: int, max_samples: int) -> int:
    """One draw of the power-law sample count, clipped to ``[min_samples, max_samples]``."""
    drawn = int(rng.lognormal(4.0, 2.0)) + 50
    return min(max(drawn, min_samples), max_samples)


def synthetic_client(
    rng: np.random.Generator, config: SyntheticWorkload
) -> tuple[Array, npt.NDArray[np.int64]]:
    """All of client ``k``'s examples (train and test together) from its own generator."""
    d, c = config.features, config.classes
    u = rng.normal(0.0, config.alpha)
    big_b = rng.normal(0.0, config.beta)
    w = rng.normal(u, 1.0, size=(c, d))
    b = rng.normal(u, 1.0, size=c)
    v = rng.normal(big_b, 1.0, size=d)
    n = client_size(rng, config.min_samples, config.max_samples)
    # Sigma is diagonal, so x = v + sqrt(Sigma) * z needs no Cholesky factor.
    std = np.arange(1, d + 1, dtype=np.float64) ** -0.6
    x = v + rng.standard_normal((n, d)) * std
    y = np.argmax(x @ w.T + b, axis=1).astype(np.int64)
    return x, y


def split_point(n: int, test_fraction: float) -> int:
    """Index where a client's test part starts; both parts keep at least one example."""
    n_test = min(max(round(n * test_fraction), 1), n - 1)
    return n - n_test


def _check(config: SyntheticWorkload) -> None:
    if config.min_samples > config.max_samples:
        raise WorkloadError(
            f"synthetic needs min_samples <= max_samples; "
            f"got min_samples={config.min_samples}, max_samples={config.max_samples}"
        )
    if config.max_samples < 2:
        raise WorkloadError(
            f"synthetic needs max_samples >= 2 (one train and one test example per client); "
            f"got max_samples={config.max_samples}"
        )


def build_synthetic(config: SyntheticWorkload, seed: int) -> Workload:
    """Client ``k`` from stream ("workload.synthetic", k); its examples are i.i.d., so the
    last ``test_fraction`` of them are an unbiased test part. The test set is every client's
    test part, so it measures the federation, not any single client."""
    _check(config)
    train: list[ClientData] = []
    test_x: list[Array] = []
    test_y: list[npt.NDArray[np.int64]] = []
    for k in range(config.num_clients):
        x, y = synthetic_client(numpy_rng(seed, "workload.synthetic", k), config)
        cut = split_point(len(y), config.test_fraction)
        train.append(client_data(x[:cut], y[:cut]))
        test_x.append(x[cut:])
        test_y.append(y[cut:])
    return Workload(
        name=config.name,
        clients=tuple(train),
        test=client_data(np.concatenate(test_x), np.concatenate(test_y)),
        make_model=functools.partial(mlp, config.features, config.hidden, config.classes),
        num_classes=config.classes,
    )
