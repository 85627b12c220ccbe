"""The JSON headers of the v1 messages, as strict pydantic models (the codec's schema).

Each model mirrors one frozen type of ``core.messages`` field for field, with ``of`` to
describe a message and ``build`` to make one, so a header that parses is a message. Strict:
no coercion (a string is not a number, a float is not an int) and no unknown keys. Ranges
are *not* checked here: an update claiming 0 examples is well-formed, and validation rejects
it with a reason.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from phalanx.core.messages import (
    ClientUpdate,
    Envelope,
    ModelRef,
    PartialWork,
    TaskConfig,
    TaskFailure,
    TaskKey,
    TrainTask,
)
from phalanx.types import FailureKind


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class EnvelopeJson(_Wire):
    protocol: int
    run_id: str
    epoch: int

    @classmethod
    def of(cls, envelope: Envelope) -> EnvelopeJson:
        return cls(protocol=envelope.protocol, run_id=envelope.run_id, epoch=envelope.epoch)

    def build(self) -> Envelope:
        return Envelope(self.protocol, self.run_id, self.epoch)


class KeyJson(_Wire):
    round: int
    client: int
    attempt: int

    @classmethod
    def of(cls, key: TaskKey) -> KeyJson:
        return cls(round=key.round, client=key.client, attempt=key.attempt)

    def build(self) -> TaskKey:
        return TaskKey(self.round, self.client, self.attempt)


class RefJson(_Wire):
    version: int
    sha256: str

    @classmethod
    def of(cls, ref: ModelRef) -> RefJson:
        return cls(version=ref.version, sha256=ref.sha256)

    def build(self) -> ModelRef:
        return ModelRef(self.version, self.sha256)


class PartialJson(_Wire):
    enabled: bool
    min_fraction: float


class ConfigJson(_Wire):
    local_epochs: int
    batch_size: int
    lr: float
    ttl_s: float
    max_steps: int | None
    partial: PartialJson

    @classmethod
    def of(cls, config: TaskConfig) -> ConfigJson:
        partial = PartialJson(
            enabled=config.partial.enabled, min_fraction=config.partial.min_fraction
        )
        return cls(
            local_epochs=config.local_epochs, batch_size=config.batch_size, lr=config.lr,
            ttl_s=config.ttl_s, max_steps=config.max_steps, partial=partial,
        )  # fmt: skip

    def build(self) -> TaskConfig:
        partial = PartialWork(self.partial.enabled, self.partial.min_fraction)
        return TaskConfig(
            self.local_epochs, self.batch_size, self.lr, self.ttl_s, self.max_steps, partial
        )


class TaskJson(_Wire):
    type: Literal["train_task"] = "train_task"
    envelope: EnvelopeJson
    key: KeyJson
    model: RefJson
    config: ConfigJson

    @classmethod
    def of(cls, task: TrainTask) -> TaskJson:
        return cls(
            envelope=EnvelopeJson.of(task.envelope), key=KeyJson.of(task.key),
            model=RefJson.of(task.model), config=ConfigJson.of(task.config),
        )  # fmt: skip

    def build(self) -> TrainTask:
        return TrainTask(self.envelope.build(), self.key.build(), self.model.build(),
                         self.config.build())  # fmt: skip


class UpdateJson(_Wire):
    type: Literal["client_update"] = "client_update"
    envelope: EnvelopeJson
    key: KeyJson
    base: RefJson
    steps_done: int
    steps_planned: int
    num_examples: int
    tensors: list[str]  # names, in the sender's order; the bytes follow as safetensors
    digest: str
    metrics: dict[str, float]
    sender: int | None

    @classmethod
    def of(cls, update: ClientUpdate) -> UpdateJson:
        return cls(
            envelope=EnvelopeJson.of(update.envelope), key=KeyJson.of(update.key),
            base=RefJson.of(update.base), steps_done=update.steps_done,
            steps_planned=update.steps_planned, num_examples=update.num_examples,
            tensors=list(update.tensors), digest=update.digest,
            metrics=dict(update.metrics), sender=update.sender,
        )  # fmt: skip

    def build(self, tensors: dict[str, torch.Tensor]) -> ClientUpdate:
        return ClientUpdate(
            envelope=self.envelope.build(), key=self.key.build(), base=self.base.build(),
            steps_done=self.steps_done, steps_planned=self.steps_planned,
            num_examples=self.num_examples, tensors=tensors, digest=self.digest,
            metrics=dict(self.metrics), sender=self.sender,
        )  # fmt: skip


class FailureJson(_Wire):
    type: Literal["task_failure"] = "task_failure"
    envelope: EnvelopeJson
    key: KeyJson
    kind: str
    detail: str

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value not in {kind.value for kind in FailureKind}:
            raise ValueError(f"unknown failure kind {value!r}")
        return value

    @classmethod
    def of(cls, failure: TaskFailure) -> FailureJson:
        return cls(
            envelope=EnvelopeJson.of(failure.envelope), key=KeyJson.of(failure.key),
            kind=failure.kind.value, detail=failure.detail,
        )  # fmt: skip

    def build(self) -> TaskFailure:
        return TaskFailure(self.key.build(), FailureKind(self.kind), self.detail,
                           self.envelope.build())  # fmt: skip


class ModelJson(_Wire):
    type: Literal["model"] = "model"
    envelope: EnvelopeJson
    ref: RefJson
    tensors: list[str]


MESSAGE: TypeAdapter[TaskJson | UpdateJson | FailureJson] = TypeAdapter(
    Annotated[TaskJson | UpdateJson | FailureJson, Field(discriminator="type")]
)
