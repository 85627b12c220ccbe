"""A real process killed at each step of a checkpoint write leaves the store usable: the
newest valid checkpoint is the old one before the rename and the new one after it, and the
next save (the resumed run redoing the round) cleans up what the dead one left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from phalanx.checkpoint import LocalCheckpointStore
from phalanx.checkpoint.crashpoints import CHECKPOINT_POINTS, ENV_VAR
from phalanx.core.state import ServerState
from phalanx.core.tensors import Manifest

SAVE_ROUNDS_1_TO_3 = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tests.faults.test_crash_points import LocalCheckpointStore, state
    store = LocalCheckpointStore(Path(sys.argv[1]), keep=2)
    for round_ in (1, 2, 3):
        store.save(state(round_))
    """
)
PUBLISHED = {"checkpoint.after_rename", "checkpoint.after_prune"}


def state(round_: int) -> ServerState:
    return ServerState(
        round=round_,
        model_version=round_,
        params=torch.full((4,), float(round_)),
        manifest=Manifest.of({"w": torch.zeros(4)}),
        health={},
    )


@pytest.mark.parametrize("point", CHECKPOINT_POINTS)
def test_a_save_killed_at_any_step_leaves_a_usable_store(tmp_path: Path, point: str) -> None:
    died = subprocess.run(
        [sys.executable, "-c", SAVE_ROUNDS_1_TO_3, str(tmp_path)],
        env={**os.environ, ENV_VAR: f"{point}@3"},
        cwd=Path(__file__).parents[2], capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert died.returncode == -signal.SIGKILL, died.stderr
    store = LocalCheckpointStore(tmp_path, keep=2)
    newest = store.latest_valid()
    assert newest is not None
    assert newest.round == (3 if point in PUBLISHED else 2)
    assert torch.equal(newest.params, state(newest.round).params)
    assert all(info.valid for info in store.list())

    store.save(state(3))
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".phalanx"))
    assert left == ["round-00000002", "round-00000003"]  # no .tmp-* left behind
