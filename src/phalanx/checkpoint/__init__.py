"""Durable, verified checkpoints of the server state (see ``format`` for the on-disk layout).

The engine sees one ``CheckpointStore`` (``store``): a local directory (``local``), any
fsspec filesystem (``fsspec_store``) or several of them at once under a write quorum
(``replicated``). It resumes from ``latest_valid()``: the newest *committed* checkpoint
(every file matches its manifest and, with replicas, ``write_quorum`` durable stores hold
it), so a torn or corrupted write costs one checkpoint, never the run. A run holds its
stores with ``acquire()``/``release()`` (or ``with held(store):``); ``layout`` says what a
store root holds and which of its entries phalanx may touch.
"""

from __future__ import annotations

from phalanx.checkpoint.fsspec_store import FsspecCheckpointStore
from phalanx.checkpoint.local import LocalCheckpointStore
from phalanx.checkpoint.replicated import ReplicatedCheckpointStore, build_store
from phalanx.checkpoint.store import CheckpointInfo, CheckpointStore, Quorum, Reject, held

__all__ = [
    "CheckpointInfo",
    "CheckpointStore",
    "FsspecCheckpointStore",
    "LocalCheckpointStore",
    "Quorum",
    "Reject",
    "ReplicatedCheckpointStore",
    "build_store",
    "held",
]
