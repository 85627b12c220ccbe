"""Named points where a fault test can make this process die, uncleanly, on purpose.

A crash test must kill the coordinator *inside* a checkpoint write, at a chosen step, and a
timer cannot aim that well: the write takes milliseconds. So the write path calls
``crash_point("checkpoint.after_tensors")`` and friends, which do nothing unless the
environment asks for it::

    PHALANX_CRASH_AT=checkpoint.after_tensors          # the first time this point is reached
    PHALANX_CRASH_AT=checkpoint.after_rename@3         # the third time, in this process
    PHALANX_CRASH_AT=checkpoint.after_state@2,engine.before_checkpoint@5   # whichever is first

When a point is due the process sends itself SIGKILL: no ``finally`` blocks, no atexit, no
buffered output flushed, exactly like the OOM killer or a pulled plug. The variable is read
once per process (the first time any point is reached); ``reset()`` makes the next call read
it again, for tests that change it.
"""

from __future__ import annotations

import logging
import os
import signal
from collections import Counter

from phalanx.errors import ConfigError

ENV_VAR = "PHALANX_CRASH_AT"

CHECKPOINT_POINTS = (
    "checkpoint.after_tmp_dir",
    "checkpoint.after_tensors",
    "checkpoint.after_state",
    "checkpoint.after_manifest",
    "checkpoint.before_rename",
    "checkpoint.after_rename",
    "checkpoint.after_prune",
)
"""The steps of ``LocalCheckpointStore.save``, in the order a save reaches them."""

ENGINE_POINTS = ("engine.before_checkpoint",)
"""Points outside the store: a round has finished, its checkpoint is not yet written."""

log = logging.getLogger("phalanx.checkpoint.crashpoints")


def parse_crash_plan(text: str) -> dict[str, int]:
    """``"a,b@3"`` -> ``{"a": 1, "b": 3}``; a point named twice dies at its earliest hit."""
    plan: dict[str, int] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        name, at, count = entry.partition("@")
        hit = _parse_hit(entry, count) if at else 1
        if not name:
            raise ConfigError(f"{ENV_VAR}: {entry!r} names no crash point; use NAME or NAME@N")
        plan[name] = min(hit, plan.get(name, hit))
    return plan


def _parse_hit(entry: str, count: str) -> int:
    if not count.isdigit() or int(count) < 1:
        raise ConfigError(f"{ENV_VAR}: {entry!r} needs a whole number N >= 1 after '@'")
    return int(count)


class PointPlan:
    """Which hit of which named point is due, from a plan in the environment variable
    ``env_var`` (read on the first ``due``); crash points and the pause points of
    ``phalanx.ha.points`` each keep one."""

    def __init__(self, env_var: str) -> None:
        self.env_var = env_var
        self._plan: dict[str, int] | None = None
        self._hits: Counter[str] = Counter()

    def due(self, name: str) -> int | None:
        """The hit number if this hit of ``name`` is the planned one, else None."""
        if self._plan is None:
            self._plan = parse_crash_plan(os.environ.get(self.env_var, ""))
        due = self._plan.get(name)
        if due is None:
            return None
        self._hits[name] += 1
        return due if self._hits[name] == due else None

    def reset(self) -> None:
        self._plan = None
        self._hits.clear()


_crashes = PointPlan(ENV_VAR)


def crash_point(name: str) -> None:
    """SIGKILL this process if ``PHALANX_CRASH_AT`` says this is the hit to die at."""
    due = _crashes.due(name)
    if due is not None:
        log.warning("crash point %s reached (hit %s): SIGKILL", name, due)
        os.kill(os.getpid(), signal.SIGKILL)


def reset() -> None:
    """Forget the parsed plan and the hit counts; the next ``crash_point`` re-reads the env."""
    _crashes.reset()
