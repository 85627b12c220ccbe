"""Data poisoning: Byzantine clients train honestly, on data they have tampered with.

The simulation poisons each Byzantine client's examples once, before any trainer is built,
so the built-in batched trainer and a user's training function in a worker process see the
same poisoned data. Everything else about these clients is normal: they report success and
their updates carry matching checksums.

* ``label_flip`` (Tolpegin et al., "Data Poisoning Attacks Against Federated Learning
  Systems", ESORICS 2020): every label y becomes num_classes - 1 - y.
* ``backdoor``: a BadNets pixel trigger (Gu et al., 2017) stamped on a share of the
  examples, relabelled as ``target``; ``boost`` scales the poisoned update at the message
  boundary, as Bagdasaryan et al.'s model replacement (AISTATS 2020) does. The attack
  succeeds when the global model learns "trigger -> target" yet stays accurate on clean data.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Self

import numpy as np
import torch
from pydantic import Field

from phalanx.core.rng import numpy_rng
from phalanx.errors import ConfigError
from phalanx.faults.attacks import Attack
from phalanx.workloads.base import ClientData

ImageShape = tuple[int, int]


def flip_labels(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``num_classes - 1 - y``: each class is mapped to its mirror, 0 <-> C-1."""
    return (num_classes - 1) - y


def stamp_trigger(
    x: torch.Tensor, image_shape: ImageShape, size: int, value: float
) -> torch.Tensor:
    """A copy of ``x`` with a ``size x size`` square of ``value`` in each image's bottom-right
    corner. ``x`` is ``(n, ...)`` with H x W images, flattened row-major or not, one channel
    or several (every channel is stamped)."""
    height, width = image_shape
    if x.shape[0] and x[0].numel() % (height * width):
        raise ConfigError(f"features of shape {tuple(x.shape[1:])} are not {height}x{width} images")
    if not 1 <= size <= min(height, width):
        raise ConfigError(f"trigger_size must be in 1..{min(height, width)}; got {size}")
    images = x.reshape(x.shape[0], -1, height, width).clone()
    images[..., height - size :, width - size :] = value
    return images.reshape(x.shape)


def poisoned_count(n: int, fraction: float) -> int:
    """How many of ``n`` examples a share ``fraction`` poisons: rounded half up."""
    return min(n, int(fraction * n + 0.5))


class DataAttack(Attack):
    """A data-poisoning attack: ``poison`` one Byzantine client's examples."""

    @abstractmethod
    def poison(
        self,
        data: ClientData,
        rng: np.random.Generator,
        *,
        num_classes: int,
        image_shape: ImageShape | None,
    ) -> ClientData: ...

    def check_data(self, *, num_classes: int, image_shape: ImageShape | None) -> None:
        """Raise ``ConfigError`` if the attack cannot run on this data."""

    def resolve(self, clients: Sequence[ClientData], byzantine: frozenset[int]) -> Self:
        """This attack with any data-dependent default filled in from the colluders' data."""
        return self


class LabelFlip(DataAttack):
    """Label flipping; no parameters."""

    name: ClassVar[str] = "label_flip"

    def poison(
        self,
        data: ClientData,
        rng: np.random.Generator,
        *,
        num_classes: int,
        image_shape: ImageShape | None,
    ) -> ClientData:
        return ClientData(data.x, flip_labels(data.y, num_classes))


class Backdoor(DataAttack):
    """A pixel-trigger backdoor. ``poison_fraction`` of each Byzantine client's examples
    (drawn from a stream derived from the seed and the client) get the trigger and label
    ``target``. ``value`` is the trigger's pixel value; None resolves (``resolve``) to the
    largest feature value of the Byzantine clients' data, one trigger shared by all of them
    (1.0 for digits, scaled to [0, 1]). ``boost`` > 1
    scales the Byzantine delta; 1.0 is pure data poisoning."""

    name: ClassVar[str] = "backdoor"
    target: int = Field(0, ge=0, description="class the trigger maps to")
    poison_fraction: float = Field(0.5, gt=0, le=1, description="share of examples poisoned")
    trigger_size: int = Field(2, ge=1, description="side of the square trigger, pixels")
    boost: float = Field(1.0, gt=0, description="Byzantine delta scaled by this")
    value: float | None = Field(None, description="trigger pixel value; null: data max")

    def craft(self, genuine: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
        return None if self.boost == 1.0 else genuine * self.boost

    def check_data(self, *, num_classes: int, image_shape: ImageShape | None) -> None:
        image_shape = _require_image(image_shape)
        if self.target >= num_classes:
            raise ConfigError(
                f"backdoor target {self.target} is not a class (0..{num_classes - 1})"
            )
        if self.trigger_size > min(image_shape):
            raise ConfigError(
                f"trigger_size {self.trigger_size} does not fit a {image_shape} image"
            )

    def poison(
        self,
        data: ClientData,
        rng: np.random.Generator,
        *,
        num_classes: int,
        image_shape: ImageShape | None,
    ) -> ClientData:
        shape = _require_image(image_shape)
        value = self.value if self.value is not None else float(data.x.max())
        chosen = rng.choice(len(data), poisoned_count(len(data), self.poison_fraction), False)
        index = torch.from_numpy(np.sort(chosen))
        x, y = data.x.clone(), data.y.clone()
        x[index] = stamp_trigger(data.x[index], shape, self.trigger_size, value)
        y[index] = self.target
        return ClientData(x, y)

    def resolve(self, clients: Sequence[ClientData], byzantine: frozenset[int]) -> Self:
        if self.value is not None:
            return self
        return self.model_copy(update={"value": trigger_value(clients, byzantine)})


def _require_image(image_shape: ImageShape | None) -> ImageShape:
    if image_shape is None:
        raise ConfigError(
            "attack 'backdoor' stamps a pixel trigger and needs image data: this workload "
            "has no image_shape (give features shaped (n, H, W) or (n, C, H, W))"
        )
    return image_shape


def poison_clients(
    clients: Sequence[ClientData],
    byzantine: frozenset[int],
    attack: DataAttack,
    *,
    num_classes: int,
    image_shape: ImageShape | None,
    seed: int,
) -> list[ClientData]:
    """``clients`` with each Byzantine one's data poisoned (stream ("poison", client)); the
    honest clients' data is returned as the very same objects."""
    attack = attack.resolve(clients, byzantine)
    attack.check_data(num_classes=num_classes, image_shape=image_shape)
    return [
        attack.poison(
            data,
            numpy_rng(seed, "poison", client),
            num_classes=num_classes,
            image_shape=image_shape,
        )
        if client in byzantine
        else data
        for client, data in enumerate(clients)
    ]


def trigger_value(clients: Sequence[ClientData], byzantine: frozenset[int]) -> float:
    """The largest feature value in the Byzantine clients' data: the brightest pixel they know."""
    return max((float(clients[c].x.max()) for c in byzantine if len(clients[c])), default=1.0)


def infer_data_shape(
    clients: Sequence[ClientData], test: ClientData | None
) -> tuple[int, ImageShape | None]:
    """(number of classes, image shape) of a user's own data: the largest label + 1, and the
    last two feature dimensions when examples are (H, W) or (C, H, W) arrays."""
    parts = [*clients, *([test] if test is not None else [])]
    num_classes = 1 + max((int(d.y.max()) for d in parts if len(d)), default=0)
    x = clients[0].x if clients else None
    image_shape = (int(x.shape[-2]), int(x.shape[-1])) if x is not None and x.ndim >= 3 else None
    return num_classes, image_shape
