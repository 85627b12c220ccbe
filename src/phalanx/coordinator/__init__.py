"""The run lifecycle: everything about a run that is not a round, owned by no runtime.

::

    RunDirectory.acquire()     lock the run directory; refuse one that holds a run (unless
                               --force, which deletes it) or, to resume, one without a run
    RunLifecycle.start()       fresh initial state, or the newest committed checkpoint of
                               this configuration (trajectory digest; others are skipped);
                               the history log cut back to that round
    RunDirectory.begin()       only now write config.json and run.json
    RunLifecycle.run()         per round: engine.run_round(state) -> (state, record), then
                                 commit step: checkpoint per cadence (write quorum or
                                 CheckpointError; off the loop, checkpoint.timeout_s or
                                 StorageError), append the record to history.jsonl
                                 observers: progress, on_round hooks (after the commit)
    stop signal                the round in flight is abandoned; what committed stays

The engine computes rounds and knows nothing of checkpoints, history or observers. The
embedded simulation drives a lifecycle today; the networked coordinator reuses it and
replaces only the commit step (``CommitStep``) where a fenced commit is needed. History is
not part of the server state: ``history.jsonl`` is the per-round log, and each checkpoint
carries only its own last round's record, so its size does not grow with the run.
"""

from __future__ import annotations

from phalanx.coordinator.commit import CheckpointCommit, CommitStep
from phalanx.coordinator.digest import config_digest, trajectory_changes
from phalanx.coordinator.history_log import History, HistoryLog, MemoryHistory
from phalanx.coordinator.lifecycle import RunLifecycle
from phalanx.coordinator.resume import newest_of_config, resumable
from phalanx.coordinator.rundir import RunDirectory
from phalanx.coordinator.signals import RunInterrupted, StopSignals, stop_requested
from phalanx.engine.engine import RoundHook

__all__ = [
    "CheckpointCommit",
    "CommitStep",
    "History",
    "HistoryLog",
    "MemoryHistory",
    "RoundHook",
    "RunDirectory",
    "RunInterrupted",
    "RunLifecycle",
    "StopSignals",
    "config_digest",
    "newest_of_config",
    "resumable",
    "stop_requested",
    "trajectory_changes",
]
