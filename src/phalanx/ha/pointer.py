"""The committed pointer: what the HA group has committed, kept in etcd at
``/PREFIX/committed`` and changed only by a fenced commit (``ha.commit``).

It names exactly the checkpoint a successor must load (the round's directory name in the
stores of the epoch that wrote it) and the digest that checkpoint's parameters must have,
so a successor never resumes from anything else, and never from a checkpoint whose bytes
differ from what was committed. ``finished`` says the run's last round is committed: every
coordinator of the group then stops.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from phalanx.checkpoint import CheckpointStore
from phalanx.checkpoint.fsspec_store import FsspecCheckpointStore
from phalanx.checkpoint.local import LocalCheckpointStore
from phalanx.checkpoint.replicated import ReplicatedCheckpointStore
from phalanx.core.state import ServerState
from phalanx.errors import CheckpointError, ProtocolError

EPOCH_DIR = "epoch-{:012d}"


class Pointer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    round: int  # rounds committed: the state's round after the last committed one
    model_version: int
    model_digest: str  # of the committed parameters (``model_digest``)
    base_digest: str  # of the parameters the round started from: the chain's link
    epoch: int  # the leader that committed it
    checkpoint: str  # the checkpoint directory name, e.g. round-00000042
    stores: tuple[str, ...]  # the epoch's store locations holding it
    config_digest: str
    finished: bool

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, raw: bytes) -> Pointer:
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            raise ProtocolError(f"the committed pointer in etcd is malformed: {exc}") from None


def model_digest(params: torch.Tensor) -> str:
    """sha256 of the flat float32 parameters' bytes."""
    flat = params.detach().to(torch.float32).contiguous().view(torch.uint8)
    return hashlib.sha256(flat.numpy().tobytes()).hexdigest()


def epoch_locations(shared: tuple[str, ...], epoch: int) -> tuple[str, ...]:
    """The store locations one epoch writes to: a subdirectory per shared store, so two
    leaders never write the same file (a paused leader may still hold its own lock)."""
    return tuple(f"{location.rstrip('/')}/{EPOCH_DIR.format(epoch)}" for location in shared)


def open_stores(
    locations: tuple[str, ...], *, write_quorum: int | None, keep: int
) -> CheckpointStore:
    stores: list[CheckpointStore] = [
        FsspecCheckpointStore(loc, keep=keep)
        if "://" in loc
        else LocalCheckpointStore(Path(loc), keep=keep)
        for loc in locations
    ]
    if len(stores) == 1:
        return stores[0]
    return ReplicatedCheckpointStore(stores, write_quorum=write_quorum)


def load_committed(pointer: Pointer, *, config_digest: str) -> ServerState:
    """The state ``pointer`` names, verified: the checkpoint's own digests (store), then the
    parameters' digest against the pointer's, the round and the configuration."""
    store = open_stores(pointer.stores, write_quorum=1, keep=1)
    state = store.load(pointer.checkpoint)
    found = model_digest(state.params)
    if found != pointer.model_digest:
        raise CheckpointError(
            f"checkpoint {pointer.checkpoint} in {store.location} holds model {found[:16]}; "
            f"the committed pointer names {pointer.model_digest[:16]}"
        )
    if state.round != pointer.round:
        raise CheckpointError(
            f"checkpoint {pointer.checkpoint} holds round {state.round}; the pointer names "
            f"round {pointer.round}"
        )
    if state.config_digest != config_digest:
        raise CheckpointError(
            f"the run's committed checkpoint is of configuration {state.config_digest}; this "
            f"coordinator's is {config_digest}: start every coordinator of the group with the "
            "same scenario and --set overrides"
        )
    return state
