"""What a checkpoint store root holds, and which of its entries are phalanx's to touch.

A store root is marked by ``.phalanx-store.json`` (``{"format": 1, "kind": ...}``), written
atomically when a store first takes the root. Beside it, phalanx writes only:

    round-NNNNNNNN/                      a checkpoint (``phalanx.checkpoint.format``)
    .tmp-round-NNNNNNNN-<8 hex>/         a local save in progress (renamed when complete)
    .tmp-old-round-NNNNNNNN-<8 hex>/     a replaced checkpoint on its way out
    ..phalanx-store.json.<8 hex>.tmp     the marker being written (``write_atomic``)
    .phalanx.lock                        the store's ``DirectoryLock``
    history.jsonl                        the run's history log, when the store root is
                                         the run's only directory (``Simulation.run(
                                         checkpoint_dir=...)``); no store touches it

Cleanup removes only names that match these patterns exactly, and retention prunes only
round directories that are phalanx checkpoints (a MANIFEST.json, or nothing but checkpoint
files): a user's ``.tmp-notes`` or ``round-foo/`` beside them survives every save. A root
that holds anything else and no marker is refused, never adopted: it is someone else's
directory. A root holding nothing but these entries (a run from before markers existed) is
adopted by writing the marker.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from phalanx.checkpoint.format import MANIFEST_FILE, PAYLOAD_FILES, parse_dir_name
from phalanx.core.locks import LOCK_FILE, DirectoryLock
from phalanx.errors import CheckpointError, ConfigError

MARKER_FILE = ".phalanx-store.json"
MARKER_FORMAT = 1
MARKER_KIND = "phalanx checkpoint store"
CHECKPOINT_FILES = frozenset({*PAYLOAD_FILES, MANIFEST_FILE})
HISTORY_FILE = "history.jsonl"  # the run lifecycle's log (phalanx.coordinator.history_log)

Entries = Iterable[tuple[str, Iterable[str] | None]]
"""A root's entries: each name with its children (a directory) or None (a file)."""

TMP_PREFIX = ".tmp-"
_TEMP = re.compile(
    r"\.tmp-(?:old-)?round-\d{8,}-[0-9a-f]{8}"  # a save in progress / a replaced checkpoint
    r"|\.\.phalanx-store\.json\.[0-9a-f]{8}\.tmp"  # write_atomic's sibling of the marker
)


def is_temp(name: str) -> bool:
    """A name phalanx gives to something unfinished, which cleanup may delete."""
    return _TEMP.fullmatch(name) is not None


def is_checkpoint_dir(name: str, entries: Iterable[str]) -> bool:
    """A round directory phalanx wrote: named ``round-NNNNNNNN`` and holding a manifest or
    nothing but checkpoint files (a damaged or unfinished checkpoint is still ours)."""
    names = set(entries)
    return parse_dir_name(name) is not None and (
        MANIFEST_FILE in names or names <= CHECKPOINT_FILES
    )


def marker_bytes() -> bytes:
    return json.dumps({"format": MARKER_FORMAT, "kind": MARKER_KIND}, sort_keys=True).encode()


def check_marker(raw: bytes, *, where: str) -> None:
    """Refuse a marker of another format (a newer phalanx) or one that is not ours at all."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        data = None
    if not isinstance(data, dict) or data.get("kind") != MARKER_KIND:
        raise ConfigError(f"{where}/{MARKER_FILE} is not a phalanx store marker; remove it or "
                          "choose another checkpoint directory")  # fmt: skip
    if data.get("format") != MARKER_FORMAT:
        raise CheckpointError(
            f"{where} is a phalanx checkpoint store of format {data.get('format')!r}; this "
            f"phalanx reads format {MARKER_FORMAT} (upgrade phalanx to use it)"
        )


def foreign_entries(entries: Entries) -> list[str]:
    """The entries of an unmarked root that phalanx did not write."""
    foreign = []
    for name, children in entries:
        if name in (LOCK_FILE, MARKER_FILE) or is_temp(name):
            continue
        if name == HISTORY_FILE and children is None:
            continue
        if children is None or not is_checkpoint_dir(name, children):
            foreign.append(name if children is None else f"{name}/")
    return sorted(foreign)


def refuse_foreign(where: str, foreign: list[str]) -> ConfigError:
    shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    return ConfigError(
        f"{where} is not a phalanx checkpoint store: it has no {MARKER_FILE} and holds {shown}; "
        "phalanx will not write into a directory it does not own: choose an empty or new "
        "directory for the checkpoints"
    )


def claim(
    where: str,
    *,
    read_marker: Callable[[], bytes | None],
    entries: Callable[[], Entries],
    write_marker: Callable[[], None],
) -> None:
    """Make sure ``where`` is a phalanx store before writing into it: check its marker, or
    adopt an unmarked root that holds only phalanx's entries by writing one; else refuse."""
    raw = read_marker()
    if raw is not None:
        check_marker(raw, where=where)
        return
    foreign = foreign_entries(entries())
    if foreign:
        raise refuse_foreign(where, foreign)
    write_marker()


class RootLock:
    """The ``DirectoryLock`` of a store root (None: a store with nothing to lock, such as an
    object store), held from ``acquire`` to ``release`` or just ``during`` one write."""

    def __init__(self, root: Path | None) -> None:
        self._lock = None if root is None else DirectoryLock(root, purpose="checkpoint store")

    def acquire(self) -> None:
        if self._lock is None:
            return
        try:
            self._lock.acquire()
        except OSError as exc:  # LockedError is no OSError: it names the holder and passes
            raise CheckpointError(f"cannot lock checkpoint store {self._lock.directory}: "
                                  f"{exc}") from exc  # fmt: skip

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()

    @contextmanager
    def during(self) -> Iterator[None]:
        """Held for the block: already held by ``acquire``, or taken and given back."""
        if self._lock is None or self._lock.held:
            yield
            return
        self.acquire()
        try:
            yield
        finally:
            self.release()
