"""The directory lock: exclusive, names its holder, released by the kernel at exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from phalanx.core.locks import DirectoryLock
from phalanx.errors import LockedError


def test_second_lock_in_same_process_is_refused_and_names_holder(tmp_path: Path) -> None:
    first = DirectoryLock(tmp_path, purpose="run").acquire()
    with pytest.raises(LockedError, match=r"in use as a run directory by pid \d+"):
        DirectoryLock(tmp_path, purpose="run").acquire()
    first.release()
    DirectoryLock(tmp_path, purpose="run").acquire().release()  # free again


def test_lock_held_by_a_killed_process_is_free(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from phalanx.core.locks import DirectoryLock;"
        f"DirectoryLock(Path({str(tmp_path)!r}), purpose='run').acquire();"
        "print('locked', flush=True); sys.stdin.read()"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "locked"
            with pytest.raises(LockedError, match=f"pid {child.pid}"):
                DirectoryLock(tmp_path, purpose="store").acquire()
        finally:
            child.kill()
            child.wait(10)
    DirectoryLock(tmp_path, purpose="store").acquire().release()
