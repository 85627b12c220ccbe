"""Virtual time of a simulated client, in the spirit of FedScale: each client has a device
speed (log-normal across clients), each transfer a network delay with jitter, and a
straggler's compute is slowed by a factor. Nothing here sleeps."""

from __future__ import annotations

from dataclasses import dataclass

from phalanx.config import LatencyConfig
from phalanx.core.messages import TaskKey
from phalanx.core.rng import numpy_rng, uniforms


@dataclass(frozen=True)
class TaskTiming:
    download_s: float
    step_s: float  # seconds per local step on this client, this attempt
    upload_s: float

    def duration(self, steps: int) -> float:
        return self.download_s + steps * self.step_s + self.upload_s

    def steps_within(self, budget: float) -> int:
        """Local steps that fit in ``budget`` seconds, transfers included."""
        room = budget - self.download_s - self.upload_s
        return max(0, int(room // self.step_s)) if self.step_s > 0 else 0


class LatencyModel:
    def __init__(self, config: LatencyConfig, *, seed: int, num_clients: int) -> None:
        self._config = config
        self._seed = seed
        self._speed = [
            float(numpy_rng(seed, "device", c).lognormal(0.0, config.speed_sigma))
            for c in range(num_clients)
        ]

    def timing(self, key: TaskKey, *, straggling: bool) -> TaskTiming:
        config = self._config
        draws = uniforms(self._seed, "network", key.round, key.client, key.attempt, count=2)
        down, up = (config.network_s + u * config.network_jitter_s for u in draws)
        step = config.step_s * self._speed[key.client]
        if straggling:
            step *= config.straggle_factor
        return TaskTiming(down, step, up)
