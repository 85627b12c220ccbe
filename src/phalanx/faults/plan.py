"""A FaultPlan turns the configured rules and schedule into a decision per (round, client,
attempt), drawn from a stream of its own: selection and training never share its random
numbers, so runs with and without faults ask the same clients and train them identically.
The plan counts what fired, under a lock, so tests can assert on injected faults."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from phalanx.config import FaultConfig
from phalanx.core.messages import TaskKey
from phalanx.core.rng import uniforms
from phalanx.types import Corruption, FaultKind

BYZANTINE = "byzantine"  # the fault log's kind for an update a Byzantine client sent


@dataclass(frozen=True)
class FaultDecision:
    kind: FaultKind
    corruption: Corruption | None = None
    fraction: float = 0.5  # where in the task a crash happens, as a share of its duration

    def to_json(self, key: TaskKey) -> dict[str, Any]:
        return {
            "round": key.round,
            "client": key.client,
            "attempt": key.attempt,
            "kind": self.kind.value,
            "detail": self.corruption.value if self.corruption else "",
        }


class FaultPlan:
    def __init__(self, config: FaultConfig, *, seed: int) -> None:
        self._config = config
        self._seed = seed
        self._lock = threading.Lock()
        self._fired: dict[int, list[dict[str, Any]]] = {}
        self.counts: Counter[str] = Counter()

    def decide(self, key: TaskKey) -> FaultDecision | None:
        """The fault (if any) for this attempt; the same key always gets the same answer."""
        if not self._config.enabled:
            return None
        draw, pick, which, where = uniforms(
            self._seed, "faults", key.round, key.client, key.attempt, count=4
        )
        kind = self._scheduled(key) or self._from_rules(key, draw, pick)
        if kind is None:
            return None
        corruption = None
        if kind is FaultKind.CORRUPT:
            options = self._config.corruptions
            corruption = options[int(which * len(options))]
        return FaultDecision(kind, corruption, 0.05 + 0.9 * where)

    def record(self, key: TaskKey, decision: FaultDecision) -> None:
        """Count a fault that actually took effect (a task the runtime really ran)."""
        with self._lock:
            self._fired.setdefault(key.round, []).append(decision.to_json(key))
            self.counts[decision.kind.value] += 1

    def record_attack(self, key: TaskKey, attack: str) -> None:
        """Count an update that a Byzantine client sent, under kind "byzantine" with the
        attack's name as detail (data poisoning included: its updates are the attack)."""
        item: dict[str, Any] = {"round": key.round, "client": key.client}
        item |= {"attempt": key.attempt, "kind": BYZANTINE, "detail": attack}
        with self._lock:
            self._fired.setdefault(key.round, []).append(item)
            self.counts[BYZANTINE] += 1

    def fired(self, round_index: int) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._fired.get(round_index, []))

    def _scheduled(self, key: TaskKey) -> FaultKind | None:
        for item in self._config.schedule:
            if (item.round, item.client) == (key.round, key.client) and item.attempt in (
                None,
                key.attempt,
            ):
                return item.kind
        return None

    def _from_rules(self, key: TaskKey, draw: float, pick: float) -> FaultKind | None:
        for rule in self._config.rules:
            if rule.clients is not None and key.client not in rule.clients:
                continue
            if draw < rule.rate and rule.kinds:
                return rule.kinds[min(int(pick * len(rule.kinds)), len(rule.kinds) - 1)]
            return None  # the first rule that covers a client decides for it
        return None
