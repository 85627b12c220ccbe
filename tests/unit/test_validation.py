"""Validation trusts nothing the client says: one literal case per rejection reason."""

from __future__ import annotations

import torch

from phalanx.config import ValidationConfig
from phalanx.core.messages import ClientUpdate, TaskKey, TrainTask
from phalanx.core.tensors import Manifest, payload_digest
from phalanx.engine.validation import (
    Accepted,
    Rejected,
    validate_update,
)
from phalanx.types import RejectReason

GLOBAL = {"w": torch.zeros(2, 2), "b": torch.zeros(2)}
MANIFEST = Manifest.of(GLOBAL)
KEY = TaskKey(round=3, client=1, attempt=1)
TASK = TrainTask(KEY, model_version=2, params=torch.zeros(6), deadline=10.0, issued_at=0.0)
CONFIG = ValidationConfig(max_norm=10.0, max_update_bytes=1024)


def update(**changes: object) -> ClientUpdate:
    tensors = changes.pop("tensors", {"w": torch.ones(2, 2), "b": torch.ones(2)})
    assert isinstance(tensors, dict)
    fields = {
        "key": KEY,
        "model_version": 2,
        "tensors": tensors,
        "num_examples": 10,
        "checksum": payload_digest(tensors),
    }
    fields.update(changes)
    return ClientUpdate(**fields)  # type: ignore[arg-type]


def reason(u: ClientUpdate) -> RejectReason | None:
    verdict = validate_update(u, TASK, MANIFEST, CONFIG, declared_examples=20)
    return verdict.reason if isinstance(verdict, Rejected) else None


def test_a_sound_update_is_accepted_with_its_delta_norm_and_weight() -> None:
    verdict = validate_update(update(work_fraction=0.5), TASK, MANIFEST, CONFIG)
    assert isinstance(verdict, Accepted)
    assert torch.equal(verdict.delta(), torch.ones(6))
    assert abs(verdict.norm - 6**0.5) < 1e-6
    assert verdict.weight == 5.0


def test_each_reason() -> None:
    assert reason(update(tensors={"w": torch.ones(2, 2)})) is RejectReason.SCHEMA
    assert (
        reason(update(tensors={"w": torch.ones(2, 2), "b": torch.ones(2), "x": torch.ones(1)}))
        is RejectReason.SCHEMA
    )
    assert reason(update(tensors={"w": torch.ones(4), "b": torch.ones(2)})) is RejectReason.SHAPE
    assert (
        reason(update(tensors={"w": torch.ones(2, 2, dtype=torch.float64), "b": torch.ones(2)}))
        is RejectReason.DTYPE
    )
    nan = torch.ones(2)
    nan[0] = float("nan")
    assert reason(update(tensors={"w": torch.ones(2, 2), "b": nan})) is RejectReason.NON_FINITE
    assert (
        reason(update(tensors={"w": torch.full((2, 2), 100.0), "b": torch.ones(2)}))
        is RejectReason.NORM_ABSOLUTE
    )
    assert reason(update(model_version=1)) is RejectReason.VERSION
    assert reason(update(key=TaskKey(3, 1, 2))) is RejectReason.ROUND
    assert reason(update(checksum="0" * 64)) is RejectReason.CHECKSUM
    assert reason(update(num_examples=0)) is RejectReason.EXAMPLES
    assert reason(update(num_examples=21)) is RejectReason.EXAMPLES  # more than declared
    assert reason(update(work_fraction=1.5)) is RejectReason.EXAMPLES
    big = {"w": torch.ones(2, 2), "b": torch.ones(300)}
    assert (
        validate_update(update(tensors=big), TASK, Manifest.of(big), CONFIG).reason
        is RejectReason.SIZE
    )  # type: ignore[union-attr]
