"""Validation trusts nothing the client says: one literal case per rejection reason."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from phalanx.config import ValidationConfig
from phalanx.core.messages import ClientUpdate, Envelope, ModelRef, TaskConfig, TaskKey, TrainTask
from phalanx.core.tensors import Manifest, payload_digest
from phalanx.engine.validation import (
    Accepted,
    Rejected,
    validate_update,
)
from phalanx.errors import WorkloadError
from phalanx.types import RejectReason

GLOBAL = {"w": torch.zeros(2, 2), "b": torch.zeros(2)}
MANIFEST = Manifest.of(GLOBAL)
KEY = TaskKey(round=3, client=1, attempt=1)
REF = ModelRef(version=2, sha256="a" * 64)
TASK = TrainTask(Envelope(), KEY, REF, TaskConfig(local_epochs=1, batch_size=4, lr=0.1, ttl_s=10.0))
PARAMS = torch.zeros(6)  # the round's model, which the collector holds
CONFIG = ValidationConfig(max_norm=10.0, max_update_bytes=1024)


def update(**changes: object) -> ClientUpdate:
    tensors = changes.pop("tensors", {"w": torch.ones(2, 2), "b": torch.ones(2)})
    assert isinstance(tensors, dict)
    fields = {
        "envelope": Envelope(),
        "key": KEY,
        "base": REF,
        "steps_done": 10,
        "steps_planned": 10,
        "tensors": tensors,
        "num_examples": 10,
        "digest": payload_digest(tensors),
        "sender": KEY.client,
    }
    fields.update(changes)
    return ClientUpdate(**fields)  # type: ignore[arg-type]


def reason(u: ClientUpdate, task: TrainTask = TASK) -> RejectReason | None:
    verdict = validate_update(u, task, PARAMS, MANIFEST, CONFIG, declared_examples=20)
    return verdict.reason if isinstance(verdict, Rejected) else None


def test_a_sound_update_is_accepted_with_its_delta_norm_and_weight() -> None:
    verdict = validate_update(update(steps_done=5), TASK, PARAMS, MANIFEST, CONFIG)
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
    assert reason(update(base=ModelRef(1, REF.sha256))) is RejectReason.VERSION
    assert reason(update(base=ModelRef(2, "b" * 64))) is RejectReason.VERSION  # other bytes
    assert reason(update(key=TaskKey(3, 1, 2))) is RejectReason.ROUND
    assert reason(update(digest="0" * 64)) is RejectReason.CHECKSUM
    assert reason(update(num_examples=0)) is RejectReason.EXAMPLES
    assert reason(update(num_examples=21)) is RejectReason.EXAMPLES  # more than declared
    assert reason(update(steps_done=11)) is RejectReason.EXAMPLES  # more than planned
    assert reason(update(steps_done=0)) is RejectReason.EXAMPLES
    budget = replace(TASK, config=replace(TASK.config, max_steps=8))
    assert reason(update(), budget) is RejectReason.EXAMPLES  # plans past the step budget
    assert reason(update(steps_done=8, steps_planned=8), budget) is None
    big = {"w": torch.ones(2, 2), "b": torch.ones(300)}
    assert (
        validate_update(
            update(tensors=big), TASK, torch.zeros(304), Manifest.of(big), CONFIG
        ).reason
        is RejectReason.SIZE
    )  # type: ignore[union-attr]


def test_a_client_acts_only_as_itself() -> None:
    """The transport's sender must be the client the task went to; unset is no sender."""
    assert reason(update(sender=2)) is RejectReason.SENDER
    assert reason(update(sender=None)) is RejectReason.SENDER


def test_one_dtype_policy_from_manifest_to_validation() -> None:
    with pytest.raises(WorkloadError, match="float64; phalanx federates float32"):
        Manifest.of({"w": torch.zeros(2, dtype=torch.float64)})
    half = {"w": torch.ones(2, 2, dtype=torch.float16), "b": torch.ones(2)}
    assert reason(update(tensors=half)) is RejectReason.DTYPE
