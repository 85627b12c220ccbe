"""Advisory locks on directories, held for a whole run, that name their holder.

Two processes must never share a run directory or a checkpoint store root: each save would
remove the other's temporary files and the two runs' checkpoints would mix. ``DirectoryLock``
takes ``flock`` on ``DIR/.phalanx.lock`` (released by the kernel when the process dies, SIGKILL
included, so a crashed run never leaves a stale lock) and writes who holds it into the file,
so a refused process can say which process to look for.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from phalanx.errors import LockedError

LOCK_FILE = ".phalanx.lock"


def _holder() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(sys.argv)[:300],
    }


def describe_holder(text: str) -> str:
    """A lock file's content as "pid 123 on host (since ..., running ...)"."""
    try:
        info = json.loads(text)
        return (
            f"pid {info['pid']} on {info['host']} (since {info['since']}, "
            f"running: {info['command']})"
        )
    except (ValueError, KeyError, TypeError):
        return "another process"


class DirectoryLock:
    """An exclusive, non-blocking lock on ``directory`` for ``purpose`` (e.g. "run").

    ``acquire`` creates the directory's lock file if needed; it raises ``LockedError``
    naming the holder when another process has it. The lock is per open file description,
    so a second ``DirectoryLock`` on the same directory in the same process is refused too.
    """

    def __init__(self, directory: Path, *, purpose: str) -> None:
        self.directory = Path(directory)
        self.purpose = purpose
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.directory / LOCK_FILE

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DirectoryLock:
        if self._fd is not None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = describe_holder(os.pread(fd, 4096, 0).decode(errors="replace"))
            os.close(fd)
            raise LockedError(
                f"{self.directory} is in use as a {self.purpose} directory by {holder}; "
                "wait for it to finish, stop it, or choose another directory"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock up (idempotent). The file stays: removing it would race a waiter."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()
