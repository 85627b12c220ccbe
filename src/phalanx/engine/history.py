"""What happened in a round, as plain data: the source of summaries, plots and reports.

Each finished round becomes one ``RoundRecord``; ``to_json`` is one line of
``history.jsonl`` (the run lifecycle's per-round log) and, for the round that produced it,
``ServerState.last_record``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

from phalanx.types import ClientId, FailureKind, RejectReason


@dataclass(slots=True)
class RoundEvent:
    """One failure or rejection, as the engine saw it."""

    client: ClientId
    attempt: int
    kind: FailureKind
    time: float
    detail: str = ""
    reason: RejectReason | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "attempt": self.attempt,
            "kind": str(self.kind),  # a StrEnum: its value (``.value`` is a slow property)
            "time": self.time,
            "detail": self.detail,
            "reason": str(self.reason) if self.reason else None,
        }


@dataclass
class RoundRecord:
    round: int
    model_version: int  # after this round: +1 if committed
    committed: bool = False
    reasons: list[str] = field(default_factory=list)  # why a round was discarded
    dispatched: list[ClientId] = field(default_factory=list)  # every client asked, in order
    accepted: list[ClientId] = field(default_factory=list)
    accepted_attempts: list[int] = field(default_factory=list)  # parallel to ``accepted``
    events: list[RoundEvent] = field(default_factory=list)
    retries: int = 0
    replacements: int = 0
    probes: int = 0
    sidelined: int = 0  # clients out of normal selection as the round opened (incl. probation)
    member_wait_s: float = 0.0  # waited for enough live members before selecting
    cancelled: int = 0  # over-selected tasks no longer needed
    partial: int = 0  # accepted updates with work_fraction < 1
    # What a robust aggregator made of the accepted updates: clients whose update had no
    # say (Krum, Bulyan), and clients whose update was clipped, with the factor.
    discarded: list[ClientId] = field(default_factory=list)
    scaled: dict[ClientId, float] = field(default_factory=dict)
    flagged: list[ClientId] = field(
        default_factory=list
    )  # suspicious: see aggregation.health_feedback
    # The round's f when validation refused updates that prove their sender faulty (None:
    # the configured f; see aggregation.base.round_f), and the clients a flag sidelined.
    effective_f: int | None = None
    flag_sidelined: list[ClientId] = field(default_factory=list)
    injected: list[dict[str, Any]] = field(default_factory=list)  # from the runtime, if any
    metrics: dict[str, float] = field(default_factory=dict)
    started_at: float = 0.0
    ended_at: float = 0.0
    wall_s: float = 0.0

    def failure_counts(self) -> Counter[str]:
        return Counter(str(event.kind) for event in self.events)

    def rejection_counts(self) -> Counter[str]:
        return Counter(str(e.reason) for e in self.events if e.reason is not None)

    def injected_counts(self) -> Counter[str]:
        return Counter(str(item["kind"]) for item in self.injected)

    def to_json(self) -> dict[str, Any]:
        # A shallow field copy (not dataclasses.asdict, which deep-copies recursively):
        # lists are copied, their items are plain values or already-JSON dicts.
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update({k: list(v) for k, v in data.items() if isinstance(v, list)})
        data["metrics"] = dict(self.metrics)
        data["scaled"] = {str(client): f for client, f in sorted(self.scaled.items())}
        data["events"] = [event.to_json() for event in self.events]
        data["failures"] = dict(self.failure_counts())
        data["rejections"] = dict(self.rejection_counts())
        data["injected_counts"] = dict(self.injected_counts())
        for key in OMITTED_WHEN_UNSET:  # absent from runs where they never happen
            if data[key] is None or data[key] == []:
                del data[key]
        return data


# Keys ``to_json`` leaves out while unset (None, empty), so histories of runs without f
# accounting or flag sidelining read exactly as before; readers use ``record.get``.
OMITTED_WHEN_UNSET: tuple[str, ...] = ("effective_f", "flag_sidelined")
