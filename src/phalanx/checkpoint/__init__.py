"""Durable, verified checkpoints of the server state (see ``format`` for the on-disk layout).

The engine resumes from ``latest_valid()``: the newest checkpoint whose every file matches
its manifest, so a torn or corrupted write costs one checkpoint, never the run.
"""

from __future__ import annotations

from phalanx.checkpoint.local import CheckpointInfo, LocalCheckpointStore

__all__ = ["CheckpointInfo", "LocalCheckpointStore"]
