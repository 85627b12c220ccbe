"""Pause points: where a fault test makes this process stop (SIGSTOP) on purpose, as a
long garbage-collection pause or a frozen VM would, at an instant a timer cannot aim at
(between a checkpoint write and the commit transaction, say)::

    PHALANX_PAUSE_AT=ha.before_txn@2     # stop the second time this point is reached

The process continues where it stopped once someone sends SIGCONT. The plan syntax is the
crash points' (``checkpoint.crashpoints``), read once per process.
"""

from __future__ import annotations

import logging
import signal
import threading

from phalanx.checkpoint.crashpoints import PointPlan, crash_point

ENV_VAR = "PHALANX_PAUSE_AT"
HA_POINTS = ("ha.before_txn", "ha.after_txn")
"""Around the fenced commit transaction, in the order a commit reaches them."""

log = logging.getLogger("phalanx.ha.points")
_pauses = PointPlan(ENV_VAR)


def pause_point(name: str) -> None:
    """SIGSTOP this process if ``PHALANX_PAUSE_AT`` says so."""
    due = _pauses.due(name)
    if due is None:
        return
    log.warning("pause point %s reached (hit %s): SIGSTOP", name, due)
    for handler in logging.getLogger().handlers + logging.getLogger("phalanx").handlers:
        handler.flush()
    # Directed at this thread: a process-directed SIGSTOP is taken by the main thread,
    # and until a loaded machine schedules it this thread runs on (past the point).
    signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
    log.warning("pause point %s: continued", name)


def fault_point(name: str) -> None:
    """A crash point and a pause point of the same name."""
    crash_point(name)
    pause_point(name)
