"""Durable file writes: fsynced contents, fsynced directory entries, atomic replacement."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_synced(path: Path, data: bytes, *, mode: int = 0o666) -> None:
    """Create ``path`` (it must not exist) with ``data`` and fsync it. ``mode`` (less the
    umask) is set as the file is created, so a secret is never readable by others."""

    def opener(name: str, flags: int) -> int:
        return os.open(name, flags, mode)

    with open(path, "xb", opener=opener) as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (POSIX needs the directory synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o666) -> None:
    """Replace ``path`` whole or not at all: a synced temporary sibling renamed over it."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        write_synced(tmp, data, mode=mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
