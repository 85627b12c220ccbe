"""Durable, verified checkpoints of the server state (see ``format`` for the on-disk layout).

The engine sees one ``CheckpointStore`` (``store``): a local directory (``local``), any
fsspec filesystem (``fsspec_store``) or several of them at once under a write quorum
(``replicated``). It resumes from ``latest_valid()``: the newest checkpoint whose every file
matches its manifest, so a torn or corrupted write costs one checkpoint, never the run.
"""

from __future__ import annotations

from phalanx.checkpoint.fsspec_store import FsspecCheckpointStore
from phalanx.checkpoint.local import LocalCheckpointStore
from phalanx.checkpoint.replicated import ReplicatedCheckpointStore, build_store
from phalanx.checkpoint.store import CheckpointInfo, CheckpointStore

__all__ = [
    "CheckpointInfo",
    "CheckpointStore",
    "FsspecCheckpointStore",
    "LocalCheckpointStore",
    "ReplicatedCheckpointStore",
    "build_store",
]
