"""Validation of each update on arrival, trusting nothing the client says about itself.

Checks run cheapest first and stop at the first failure, so every rejection carries exactly
one reason. The update is checked against the task the engine dispatched (its key, the
model reference it carried, its step budget) and against the round's flat parameters, which
the collector holds: the message itself carries only a reference to the model. The relative
norm bound needs the round's other updates: it lives in ``engine.norms`` and the round's
update pool applies it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

import torch

from phalanx.config import ValidationConfig
from phalanx.core.messages import ClientUpdate, TrainTask
from phalanx.core.tensors import (
    WIRE_DTYPE,
    WIRE_DTYPE_NAME,
    Manifest,
    dtype_name,
    flatten,
    payload_digest,
)
from phalanx.types import RejectReason

# Differences are taken this many elements at a time, so validating (or folding) an update
# never allocates more than a chunk beyond the message itself.
CHUNK = 1 << 20

WIRE_ITEMSIZE = torch.empty(0, dtype=WIRE_DTYPE).element_size()


@dataclass(frozen=True, slots=True)
class Accepted:
    update: ClientUpdate
    params: torch.Tensor  # the flat global model the client was sent
    manifest: Manifest
    norm: float  # of the update: client weights minus ``params``
    weight: float  # examples x work fraction
    # The flat delta as validation computed it, kept when the model fits in one chunk
    # (memory stays O(CHUNK)), so folding or stacking does not compute it again.
    kept: torch.Tensor | None = None

    def parts(self) -> Iterable[tuple[int, torch.Tensor]]:
        """``delta_parts``, as a one-piece tuple for the common small model (no generator:
        a round folds k of them)."""
        kept = self.kept
        if kept is not None and len(self.manifest.specs) == 1 and kept.numel() <= CHUNK:
            return ((0, kept),)
        return self.delta_parts()

    def delta_parts(self) -> Iterator[tuple[int, torch.Tensor]]:
        """(offset, piece of the flat delta), one chunk at a time: the kept delta's pieces,
        or pieces made on demand. Pieces are the same either way (one per tensor and chunk),
        so a fold adds the same numbers at the same offsets."""
        kept = self.kept
        if kept is not None and len(self.manifest.specs) == 1 and kept.numel() <= CHUNK:
            yield 0, kept  # one tensor, one piece: the common small model
            return
        if kept is not None:
            for begin, end in _spans(self.manifest):
                yield begin, _window(kept, begin, end)
            return
        for begin, piece in _pieces(self.update.tensors, self.manifest):
            yield begin, piece - _window(self.params, begin, begin + piece.numel())

    def delta(self) -> torch.Tensor:
        """The whole flat delta (d floats): for aggregators that need the stack."""
        if self.kept is not None:
            return self.kept
        return flatten(self.update.tensors, self.manifest) - self.params

    def lean(self) -> Accepted:
        """This update without the client's tensors when its delta is kept: what the pool
        holds, so a held update costs one model, not two."""
        if self.kept is None or not self.update.tensors:
            return self
        return replace(self, update=replace(self.update, tensors={}))


def _spans(manifest: Manifest) -> Iterator[tuple[int, int]]:
    """[begin, end) in the flat model of each piece: one per tensor, split every CHUNK."""
    offset = 0
    for spec in manifest.specs:
        for start in range(0, spec.numel, CHUNK):
            yield offset + start, offset + min(start + CHUNK, spec.numel)
        offset += spec.numel


def _pieces(
    tensors: dict[str, torch.Tensor], manifest: Manifest
) -> Iterator[tuple[int, torch.Tensor]]:
    """(offset in the flat model, flat piece of a tensor of at most CHUNK elements)."""
    offset = 0
    for spec in manifest.specs:
        flat = tensors[spec.name].reshape(-1)
        if 0 < spec.numel <= CHUNK:
            yield offset, flat
        else:
            for start in range(0, spec.numel, CHUNK):
                yield offset + start, flat[start : start + CHUNK]
        offset += spec.numel


def _window(vector: torch.Tensor, begin: int, end: int) -> torch.Tensor:
    return vector if begin == 0 and end == vector.numel() else vector[begin:end]


def delta_and_norm(
    tensors: dict[str, torch.Tensor], params: torch.Tensor, manifest: Manifest
) -> tuple[float, torch.Tensor | None]:
    """The delta's L2 norm (NaN or Inf anywhere in the update makes it non-finite: the
    global model is finite) and the flat delta itself when it fits one chunk. One pass:
    each piece is subtracted once; its norm is taken in float64."""
    dim = params.numel()
    if len(manifest.specs) == 1 and 0 < dim <= CHUNK:  # the common small model: no pieces
        weights = tensors[manifest.specs[0].name]
        delta = (weights if weights.dim() == 1 else weights.reshape(-1)) - params
        return math.hypot(float(torch.linalg.vector_norm(delta, dtype=torch.float64))), delta
    kept = torch.empty(dim, dtype=params.dtype) if 0 < dim <= CHUNK else None
    norms: list[float] = []
    for begin, piece in _pieces(tensors, manifest):
        end = begin + piece.numel()
        if kept is not None:
            delta = torch.sub(piece, params[begin:end], out=kept[begin:end])
        else:
            delta = piece - _window(params, begin, end)
        norms.append(float(torch.linalg.vector_norm(delta, dtype=torch.float64)))
    return math.hypot(*norms), kept


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: RejectReason
    detail: str


def _schema(update: ClientUpdate, manifest: Manifest) -> Rejected | None:
    if update.tensors.keys() != manifest.name_set:
        names = set(update.tensors)
        missing = sorted(set(manifest.names) - names)
        extra = sorted(names - set(manifest.names))
        return Rejected(RejectReason.SCHEMA, f"missing {missing}, unexpected {extra}")
    for spec in manifest.specs:
        tensor = update.tensors[spec.name]
        if not isinstance(tensor, torch.Tensor):
            return Rejected(RejectReason.SCHEMA, f"{spec.name} is not a tensor")
        if tensor.shape != spec.shape:  # torch.Size is a tuple
            return Rejected(
                RejectReason.SHAPE, f"{spec.name}: {tuple(tensor.shape)} != {spec.shape}"
            )
        if tensor.dtype != WIRE_DTYPE:
            return Rejected(
                RejectReason.DTYPE, f"{spec.name}: {dtype_name(tensor.dtype)} != {WIRE_DTYPE_NAME}"
            )
    return None


def _claims(
    update: ClientUpdate, task: TrainTask, declared_examples: int | None
) -> Rejected | None:
    if update.sender != task.key.client:
        return Rejected(
            RejectReason.SENDER, f"sent by {update.sender}, the task went to {task.key.client}"
        )
    if update.key is not task.key and update.key != task.key:
        return Rejected(RejectReason.ROUND, f"answers {update.key}, expected {task.key}")
    if update.base is not task.model and update.base != task.model:
        return Rejected(
            RejectReason.VERSION,
            f"trained on version {update.base.version} ({update.base.sha256[:12]}), "
            f"dispatched {task.model.version} ({task.model.sha256[:12]})",
        )
    limit = declared_examples if declared_examples is not None else 2**31
    if not 0 < update.num_examples <= limit:
        return Rejected(RejectReason.EXAMPLES, f"num_examples={update.num_examples}, max {limit}")
    return _steps(update, task)


def _steps(update: ClientUpdate, task: TrainTask) -> Rejected | None:
    """0 < done <= planned, and planned within the task's step budget when it set one."""
    done, planned, budget = update.steps_done, update.steps_planned, task.config.max_steps
    if not 0 < done <= planned or (budget is not None and planned > budget):
        return Rejected(
            RejectReason.EXAMPLES, f"steps done {done} of {planned} planned (budget {budget})"
        )
    return None


def validate_update(
    update: ClientUpdate,
    task: TrainTask,
    params: torch.Tensor,
    manifest: Manifest,
    config: ValidationConfig,
    declared_examples: int | None = None,
) -> Accepted | Rejected:
    """Accept an update (with its flat delta from ``params``, the model ``task`` referred
    to) or reject it with one reason."""
    problem = _claims(update, task, declared_examples) or _schema(update, manifest)
    if problem:
        return problem
    # Every tensor now has its manifest shape and the wire dtype: the payload's size is the
    # model's (``payload_size``), known without walking the tensors.
    size = manifest.dim * WIRE_ITEMSIZE
    if size > config.max_update_bytes:
        return Rejected(RejectReason.SIZE, f"{size} bytes > {config.max_update_bytes}")
    if payload_digest(update.tensors) != update.digest:
        return Rejected(RejectReason.CHECKSUM, "payload does not match its sha256")
    weight = float(update.num_examples * update.work_fraction)
    norm, kept = delta_and_norm(update.tensors, params, manifest)
    if not math.isfinite(norm):
        return Rejected(RejectReason.NON_FINITE, "NaN or Inf in the update")
    if norm > config.max_norm:
        return Rejected(RejectReason.NORM_ABSOLUTE, f"norm {norm:.4g} > {config.max_norm:.4g}")
    return Accepted(update, params, manifest, norm, weight, kept)
