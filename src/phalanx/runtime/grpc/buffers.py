"""Assembly buffers used again once every tensor viewing them is gone.

A received update's tensors view the buffer its chunks were copied into, so that buffer
lives as long as whoever holds the update. A fresh buffer per update cost more than the
copy into it: each of a 40 MB buffer's 10,000 pages was faulted in and zeroed by the kernel
on first touch, then unmapped when freed, about 0.5 s of CPU per GB received (as much as
the sha256 digest). The pool hands out a buffer of the asked size that a previous update
left behind, when there is one: ``take`` returns a numpy array over it, and when that array
(and with it every view and tensor made from it) is collected, the buffer goes back.

The pool keeps at most ``max_bytes`` of idle buffers; past that a returned buffer is simply
freed. Small buffers (under ``min_bytes``) are left to the allocator, which reuses them
cheaply anyway. A reused buffer holds an earlier stream's bytes: the assembler overwrites
every byte before it hands anything out.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np

Bytes = np.ndarray[Any, np.dtype[np.uint8]]


class BufferPool:
    """Idle byte buffers by size, at most ``max_bytes`` of them; thread-safe."""

    def __init__(self, *, max_bytes: int = 256 << 20, min_bytes: int = 1 << 20) -> None:
        self.max_bytes = max_bytes
        self.min_bytes = min_bytes
        self._idle: dict[int, list[bytearray]] = {}
        self._idle_bytes = 0
        self._lock = threading.Lock()

    @property
    def idle_bytes(self) -> int:
        return self._idle_bytes

    def take(self, size: int) -> Bytes:
        """An uninitialised array of ``size`` bytes; its buffer returns to the pool when the
        array is collected."""
        if size < self.min_bytes:
            return np.empty(size, dtype=np.uint8)
        with self._lock:
            idle = self._idle.get(size)
            raw = idle.pop() if idle else None
            if raw is not None:
                self._idle_bytes -= size
        if raw is None:
            raw = bytearray(size)
        array = np.frombuffer(raw, dtype=np.uint8)
        weakref.finalize(array, self._give_back, raw).atexit = False
        return array

    def _give_back(self, raw: bytearray) -> None:
        with self._lock:
            if self._idle_bytes + len(raw) <= self.max_bytes:
                self._idle.setdefault(len(raw), []).append(raw)
                self._idle_bytes += len(raw)

    def clear(self) -> None:
        """Free every idle buffer."""
        with self._lock:
            self._idle.clear()
            self._idle_bytes = 0


BUFFERS = BufferPool()  # the process's pool: every assembler takes its buffer here
