"""A seeded random-schedule chaos runner for the networked deployment: real coordinator and
client processes on loopback, the clients behind the fault-injecting ``ChaosProxy``, the
schedule mixing network faults, client SIGKILL and SIGSTOP/SIGCONT, and coordinator SIGKILL
(by a timer or inside a checkpoint write) with a restart from ``--resume``; after each,
checks of the run directory (one chain of commits, every checkpoint on it, nothing lost or
doubled, nothing corrupt aggregated, no coordinator crash). ``python -m benchmarks.chaos``
runs many; ``tests/faults/test_chaos_schedules.py`` a few."""

from phalanx.testing.chaos.checks import Verdict, check_run
from phalanx.testing.chaos.plan import (
    ChaosPlan,
    KillClient,
    KillCoordinator,
    PauseClient,
    draw_plan,
)
from phalanx.testing.chaos.runner import ChaosRun, Outcome

__all__ = [
    "ChaosPlan",
    "ChaosRun",
    "KillClient",
    "KillCoordinator",
    "Outcome",
    "PauseClient",
    "Verdict",
    "check_run",
    "draw_plan",
]
