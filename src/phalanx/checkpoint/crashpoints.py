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

_plan: dict[str, int] | None = None  # point name -> the hit (1-based) that kills
_hits: Counter[str] = Counter()


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


def crash_point(name: str) -> None:
    """SIGKILL this process if ``PHALANX_CRASH_AT`` says this is the hit to die at."""
    global _plan
    if _plan is None:
        _plan = parse_crash_plan(os.environ.get(ENV_VAR, ""))
    due = _plan.get(name)
    if due is None:
        return
    _hits[name] += 1
    if _hits[name] == due:
        log.warning("crash point %s reached (hit %s): SIGKILL", name, due)
        os.kill(os.getpid(), signal.SIGKILL)


def reset() -> None:
    """Forget the parsed plan and the hit counts; the next ``crash_point`` re-reads the env."""
    global _plan
    _plan = None
    _hits.clear()
