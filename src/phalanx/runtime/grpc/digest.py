"""The digest of a chunked stream, hashed while its bytes still arrive.

``payload_digest`` is sha256 over each tensor's header and bytes in sorted name order; a
stream carries the tensors in spec order. ``RunningDigest`` hashes, each time it is fed, as
far along the sorted order as the bytes received so far reach: all of them as they arrive
when the two orders agree (a single tensor always does), the rest at the end when they do
not. Hashing at the end only was a push's last step, as long as receiving 40 MB over
loopback, during which the client waited for its reply.

The bytes hashed are the wire's little-endian ones, which are the tensors' own bytes only
on a little-endian host; ``RunningDigest.usable`` says whether it applies (elsewhere the
caller hashes the finished tensors with ``payload_digest``).
"""

from __future__ import annotations

import hashlib
import sys
import threading

from phalanx.core.tensors import WIRE_DTYPE, TensorSpec, digest_header

USABLE = sys.byteorder == "little"


class RunningDigest:
    """sha256 in ``payload_digest``'s order over a buffer being filled front to back.

    ``feed(buffer, received)`` hashes what ``buffer[:received]`` newly allows; it may run in
    another thread than the one filling the buffer (it reads only bytes already received,
    and a lock keeps two feeds from interleaving)."""

    usable = USABLE

    def __init__(self, specs: tuple[TensorSpec, ...], itemsize: int) -> None:
        starts, at = [], 0
        for spec in specs:
            starts.append((at, spec.numel * itemsize))
            at += spec.numel * itemsize
        order = sorted(range(len(specs)), key=lambda i: specs[i].name)
        self._queue = [
            (digest_header(specs[i].name, WIRE_DTYPE, specs[i].shape), *starts[i]) for i in order
        ]
        self._next = 0  # index into _queue of the tensor being hashed
        self._done = 0  # its bytes hashed so far (its header once _started)
        self._started = False
        self._hash = hashlib.sha256()
        self._lock = threading.Lock()
        self.hashed = 0  # bytes hashed so far, all tensors

    def feed(self, buffer: memoryview, received: int) -> None:
        """Hash, in digest order, every byte of ``buffer[:received]`` not hashed yet that
        the order allows now."""
        with self._lock:
            while self._next < len(self._queue):
                header, start, size = self._queue[self._next]
                if not self._started:
                    self._hash.update(header)
                    self._started = True
                ready = min(size, received - start)
                if ready > self._done:
                    self._hash.update(buffer[start + self._done : start + ready])
                    self.hashed += ready - self._done
                    self._done = ready
                if self._done < size:
                    return
                self._next, self._done, self._started = self._next + 1, 0, False

    def hexdigest(self, buffer: memoryview, total: int) -> str:
        """The digest, once all ``total`` bytes are in ``buffer``."""
        self.feed(buffer, total)
        return self._hash.hexdigest()
