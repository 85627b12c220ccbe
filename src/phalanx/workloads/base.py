"""What a workload hands the engine: per-client tensors, a test set and a model factory.

Frozen dataclasses, so a client's data cannot be swapped under a running round; the tensors
themselves are shared, not copied, and no caller writes to them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from phalanx.errors import WorkloadError


@dataclass(frozen=True)
class ClientData:
    """One client's (or the test set's) examples: float32 features, int64 labels."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        # Trainers pad clients into one batch by len(); a mismatch would corrupt it silently.
        if self.y.ndim != 1 or self.x.shape[0] != self.y.shape[0]:
            raise WorkloadError(
                f"features and labels disagree: x has shape {tuple(self.x.shape)}, "
                f"y has shape {tuple(self.y.shape)}; need x (n, ...) and y (n,)"
            )

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class Workload:
    """A built task. ``make_model`` returns a fresh, untrained model; the caller seeds init,
    so every process that builds the model from the same seed gets the same weights.
    ``image_shape`` (height, width) says the features are images, flattened row-major (with
    any channels first): what a pixel-trigger backdoor needs to find a corner."""

    name: str
    clients: tuple[ClientData, ...]
    test: ClientData
    make_model: Callable[[], torch.nn.Module]
    num_classes: int
    image_shape: tuple[int, int] | None = None


def client_data(x: npt.NDArray[np.floating], y: npt.NDArray[np.integer]) -> ClientData:
    """Tensors from numpy arrays, owned (not views of the arrays) and contiguous."""
    features = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).clone()
    labels = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)).clone()
    return ClientData(features, labels)
