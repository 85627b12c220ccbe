"""Which checkpoint a run resumes from: the newest committed one *of this configuration*.

A directory may hold checkpoints of other configurations (an older run's, before ``--force``
cleared it, or replicas shared by mistake): those are skipped with a warning, never loaded
as if they were this run's, and never a reason to refuse when a checkpoint of this
configuration is there too.
"""

from __future__ import annotations

import logging

from phalanx.checkpoint import CheckpointInfo, CheckpointStore
from phalanx.core.state import ServerState
from phalanx.errors import CheckpointError

log = logging.getLogger("phalanx.coordinator.resume")

BELOW_QUORUM = "below the write quorum"


def resumable(info: CheckpointInfo) -> bool:
    """A checkpoint that counts as a commit: verified and, in a replicated store, held by
    ``write_quorum`` durable stores (a save that missed its quorum is no commit, whatever
    store holds a copy)."""
    return info.committed


def why_not_committed(info: CheckpointInfo) -> str:
    """Why a listed checkpoint is not a commit, in words."""
    quorum = info.quorum
    if info.valid and quorum is not None and not quorum.met:
        return f"held by {quorum.copies} durable store(s), {BELOW_QUORUM} of {quorum.required}"
    return info.problem or "not committed"


def newest_of_config(
    store: CheckpointStore, digest: str, *, rounds: int
) -> tuple[ServerState | None, list[str]]:
    """The newest resumable checkpoint whose trajectory digest is ``digest`` and whose round
    is at most ``rounds`` (None when the store holds none), and why newer ones were skipped."""
    skipped: list[str] = []
    for info in sorted(store.list(), key=lambda i: i.round, reverse=True):
        if not resumable(info):
            skipped.append(f"round {info.round}: {why_not_committed(info)}")
            continue
        if info.round > rounds:
            skipped.append(f"round {info.round}: past this run's last round {rounds}")
            continue
        try:
            state = store.load(info.ref)
        except CheckpointError as exc:  # damaged since it was listed
            skipped.append(f"round {info.round}: {exc}")
            continue
        if state.config_digest == digest:
            for reason in skipped:
                log.warning("skipping checkpoint %s", reason)
            return state, skipped
        skipped.append(f"round {info.round}: another configuration (digest {state.config_digest})")
    return None, skipped


def no_checkpoint(
    store: CheckpointStore, digest: str, skipped: list[str], where: str
) -> CheckpointError:
    """The refusal when nothing of this configuration can be resumed."""
    found = f" (skipped {'; '.join(skipped)})" if skipped else " (it holds none)"
    lost = (
        "; if a checkpoint store is lost for good, resume with `--set "
        "checkpoint.write_quorum=N`, N the durable stores that remain"
        if any(BELOW_QUORUM in reason for reason in skipped)
        else ""
    )
    return CheckpointError(
        f"no valid checkpoint of this configuration (digest {digest}) in {store.location} "
        f"to resume from{found}{lost}; to start over, `phalanx run --out {where} --force` "
        "deletes what the directory holds"
    )
