"""ServerState: everything the coordinator must not lose, in one serialisable value.

Tensors go to safetensors; everything else is plain JSON (``to_json``/``from_json``), so a
checkpoint never needs pickle.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from phalanx.core.tensors import Manifest
from phalanx.types import ClientId, HealthState


@dataclass(frozen=True, slots=True)
class ClientHealth:
    score: float = 1.0
    state: HealthState = HealthState.HEALTHY
    sidelined_until: int = -1  # first round at which a sidelined client may be probed
    cooldown: int = 0  # length of the last sideline, doubled on each relapse
    successes: int = 0
    failures: int = 0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "state": self.state.value}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClientHealth:
        return cls(**{**data, "state": HealthState(data["state"])})


@dataclass(frozen=True)
class ServerState:
    round: int  # the next round to run
    model_version: int  # number of committed rounds
    params: torch.Tensor  # flat float32 global model
    manifest: Manifest
    health: dict[ClientId, ClientHealth]
    # The record of the round that produced this state (RoundRecord.to_json()): a checkpoint
    # carries it so that a crash between the checkpoint and the history log's append loses
    # nothing. The whole history is a log beside the checkpoints, never part of the state.
    last_record: dict[str, Any] | None = None
    clock: float = 0.0  # engine clock at the end of the last round
    config_digest: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # Aggregator state carried between committed rounds (e.g. centred clipping's centre):
    # tensors, so they rest in safetensors beside params, never in JSON.
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def with_changes(self, **changes: Any) -> ServerState:
        return replace(self, **changes)

    def metadata_json(self) -> dict[str, Any]:
        """Everything but the parameter tensor."""
        return {
            "round": self.round,
            "model_version": self.model_version,
            "manifest": self.manifest.to_json(),
            "health": {str(c): h.to_json() for c, h in sorted(self.health.items())},
            "last_record": self.last_record,
            "clock": self.clock,
            "config_digest": self.config_digest,
            "extra": self.extra,
        }

    @classmethod
    def from_metadata(
        cls,
        meta: dict[str, Any],
        params: torch.Tensor,
        tensors: dict[str, torch.Tensor] | None = None,
    ) -> ServerState:
        return cls(
            round=int(meta["round"]),
            model_version=int(meta["model_version"]),
            params=params,
            manifest=Manifest.from_json(meta["manifest"]),
            health={int(c): ClientHealth.from_json(h) for c, h in meta["health"].items()},
            last_record=_last_record(meta),
            clock=float(meta["clock"]),
            config_digest=str(meta["config_digest"]),
            extra=dict(meta.get("extra", {})),
            tensors=dict(tensors or {}),
        )


def _last_record(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint's own last record; checkpoints written before history left the state
    carry the whole history instead, of which the last entry is that record."""
    if "last_record" in meta:
        record = meta["last_record"]
        return None if record is None else dict(record)
    history = meta.get("history") or []
    return dict(history[-1]) if history else None
