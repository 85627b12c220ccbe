"""Tensors as raw bytes, and chunked streams of them put back together without trust.

On the wire a set of tensors is its specs (name, dtype, shape, in order) and their raw
little-endian float32 bytes concatenated, cut into chunks numbered 0, 1, 2, ... (no pickle
and no second container format inside protobuf: the specs are the container). The
``Assembler`` takes the chunks of one stream and refuses, with ``ProtocolError`` naming the
problem, anything but the stream its header announced: a chunk out of order, repeated or
missing, an empty or oversized chunk, more bytes than announced (``SizeLimitError``, before
they are buffered), a stream that ends short, tensors that do not hash to the digest.
Memory is taken at the first chunk, the announced total at once (checked against the limit
before that chunk) from ``buffers.BUFFERS``, which recycles the buffers of updates already
dropped; it is not zeroed (``finish`` hands out nothing before every byte was written), so
a header alone costs nothing and a chunk is copied exactly once. The digest is hashed as
the bytes arrive (``hash_ahead``, which the servicer runs off the event loop), so
little is left to hash when the stream ends.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from phalanx.core.tensors import WIRE_DTYPE, WIRE_DTYPE_NAME, TensorSpec, payload_digest
from phalanx.errors import ProtocolError, SizeLimitError
from phalanx.runtime.grpc.buffers import BUFFERS, Bytes
from phalanx.runtime.grpc.digest import RunningDigest

ITEMSIZE = WIRE_DTYPE.itemsize
_LE = np.dtype("<f4")  # the wire's byte order, whatever the host's
MAX_TENSORS = 1 << 16
MAX_RANK = 32


@dataclass(frozen=True)
class WireLimits:
    """``max_bytes``: the largest update (or model) accepted; ``max_chunk_bytes``: the largest
    chunk accepted; ``chunk_bytes``: the size this side cuts its own streams into."""

    max_bytes: int = 1 << 30
    max_chunk_bytes: int = 4 << 20
    chunk_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        if not 0 < self.chunk_bytes <= self.max_chunk_bytes:
            raise ValueError(
                f"need 0 < chunk_bytes <= max_chunk_bytes; got {self.chunk_bytes}, "
                f"{self.max_chunk_bytes}"
            )


def specs_of(tensors: Mapping[str, torch.Tensor]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(n, tuple(t.shape), WIRE_DTYPE_NAME) for n, t in tensors.items())


def raw_bytes(tensors: Mapping[str, torch.Tensor]) -> bytes:
    """The tensors' little-endian bytes, concatenated in order (``ProtocolError`` for a dtype
    the wire does not carry)."""
    parts = []
    for name, tensor in tensors.items():
        if tensor.dtype != WIRE_DTYPE:
            raise ProtocolError(f"tensor {name!r} is {tensor.dtype}; the wire carries float32")
        parts.append(np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype=_LE).tobytes())
    return b"".join(parts)


def flat_bytes(vector: torch.Tensor) -> memoryview:
    """A flat float32 vector's little-endian bytes: a view of its memory when it is already
    a contiguous little-endian CPU vector (a published model's parameters are)."""
    array = np.ascontiguousarray(vector.detach().cpu().numpy().reshape(-1), dtype=_LE)
    return array.view(np.uint8).data


def tensor_views(tensors: Mapping[str, torch.Tensor]) -> list[memoryview]:
    """Each tensor's little-endian bytes, in order: a view of its memory when it is already a
    contiguous little-endian CPU float32 tensor (a copy otherwise). ``ProtocolError`` for a
    dtype the wire does not carry."""
    views = []
    for name, tensor in tensors.items():
        if tensor.dtype != WIRE_DTYPE:
            raise ProtocolError(f"tensor {name!r} is {tensor.dtype}; the wire carries float32")
        array = np.ascontiguousarray(tensor.detach().cpu().numpy().reshape(-1), dtype=_LE)
        views.append(array.view(np.uint8).data)
    return views


def chunk_pieces(views: list[memoryview], size: int) -> Iterator[tuple[int, list[memoryview]]]:
    """(seq, pieces) of the views' bytes concatenated, cut every ``size`` bytes: a chunk's
    pieces are slices of the views (one per tensor it spans), never copies."""
    seq, pending, room = 0, [], size
    for view in views:
        at = 0
        while at < len(view):
            take = min(room, len(view) - at)
            pending.append(view[at : at + take])
            at += take
            room -= take
            if room == 0:
                yield seq, pending
                seq, pending, room = seq + 1, [], size
    if pending:
        yield seq, pending


def chunks(data: bytes | memoryview, size: int) -> Iterator[tuple[int, memoryview]]:
    """(seq, bytes) pieces of ``data`` of at most ``size`` bytes (none for empty data)."""
    view = memoryview(data).cast("B")
    for seq, start in enumerate(range(0, len(view), size)):
        yield seq, view[start : start + size]


def check_specs(specs: tuple[TensorSpec, ...], total_bytes: int, limit: int, what: str) -> None:
    """Refuse specs that are not float32 tensors of distinct names adding up to
    ``total_bytes``, or a total over ``limit``."""
    if total_bytes < 0:
        raise ProtocolError(f"{what} announces {total_bytes} bytes")
    if total_bytes > limit:
        raise SizeLimitError(f"{what} of {total_bytes} bytes exceeds the limit of {limit}")
    if len(specs) > MAX_TENSORS:
        raise ProtocolError(f"{what} has {len(specs)} tensors (at most {MAX_TENSORS})")
    if len({spec.name for spec in specs}) != len(specs) or not all(s.name for s in specs):
        raise ProtocolError(f"{what} names its tensors twice or with an empty name")
    described = 0
    for spec in specs:
        _check_spec(spec, limit, what)
        described += spec.numel * ITEMSIZE
        if described > total_bytes:
            break
    if described != total_bytes:
        raise ProtocolError(f"{what}'s tensor specs do not add up to its {total_bytes} bytes")


def _check_spec(spec: TensorSpec, limit: int, what: str) -> None:
    """A float32 tensor whose shape could hold, even with a 0 in it, no more than ``limit``
    bytes (a shape like (0, 2**62) holds nothing, yet no array library can make it)."""
    if spec.dtype != WIRE_DTYPE_NAME:
        raise ProtocolError(
            f"{what}: tensor {spec.name!r} is {spec.dtype!r}; the wire carries float32 only"
        )
    extent = ITEMSIZE
    for dim in spec.shape[:MAX_RANK]:
        extent *= max(dim, 1)
    if len(spec.shape) > MAX_RANK or min(spec.shape, default=0) < 0 or extent > limit:
        raise ProtocolError(f"{what}: tensor {spec.name!r} has shape {spec.shape}")


class Assembler:
    """The tensors of one chunked stream, from chunks received in order."""

    def __init__(
        self, specs: tuple[TensorSpec, ...], total_bytes: int, limits: WireLimits, what: str
    ) -> None:
        check_specs(specs, total_bytes, limits.max_bytes, what)
        self._specs = specs
        self._total = total_bytes
        self._max_chunk = limits.max_chunk_bytes
        self._what = what
        self._buffer = _EMPTY  # the announced total, uninitialised, from the first chunk
        self._received = 0
        self._next = 0
        self._digest = RunningDigest(specs, ITEMSIZE)

    @property
    def received(self) -> int:
        return self._received

    @property
    def unhashed(self) -> int:
        """Bytes received that the digest has not hashed yet (all of them where the digest
        cannot run ahead, which is hashed whole by ``finish``)."""
        return self._received - (self._digest.hashed if self._digest.usable else 0)

    def hash_ahead(self) -> None:
        """Hash the bytes received so far (those the digest's order reaches); safe to call
        from another thread while ``add`` goes on, one call at a time."""
        received = self._received  # read first: the buffer is in place before it grows
        if self._digest.usable:
            self._digest.feed(self._buffer.data, received)

    def add(self, seq: int, data: bytes | memoryview) -> None:
        if seq != self._next:
            problem = "repeated" if seq < self._next else "out of order (or one is missing)"
            raise ProtocolError(f"{self._what}: chunk {seq} {problem}; expected {self._next}")
        if not data:
            raise ProtocolError(f"{self._what}: chunk {seq} is empty")
        if len(data) > self._max_chunk:
            raise SizeLimitError(
                f"{self._what}: chunk {seq} of {len(data)} bytes exceeds the chunk limit "
                f"of {self._max_chunk}"
            )
        if self.received + len(data) > self._total:
            raise SizeLimitError(
                f"{self._what}: chunk {seq} brings {self.received + len(data)} bytes; "
                f"{self._total} were announced"
            )
        if not self._buffer.size:
            self._buffer = BUFFERS.take(self._total)
        end = self._received + len(data)
        self._buffer.data[self._received : end] = data
        self._received = end
        self._next += 1

    def finish(self, digest: str) -> dict[str, torch.Tensor]:
        """The tensors, once every announced byte arrived and they hash to ``digest``."""
        if self.received != self._total:
            raise ProtocolError(
                f"{self._what}: stream ended after {self.received} of {self._total} bytes "
                f"(chunks missing)"
            )
        tensors = _tensors(self._buffer, self._specs)
        if self._digest.usable:
            got = self._digest.hexdigest(self._buffer.data, self._total)
        else:
            got = payload_digest(tensors)
        if got != digest:
            raise ProtocolError(f"{self._what}: tensors do not match their digest")
        return tensors


_EMPTY = np.empty(0, dtype=np.uint8)


def _tensors(buffer: Bytes, specs: tuple[TensorSpec, ...]) -> dict[str, torch.Tensor]:
    """Tensors viewing ``buffer`` (no copy on a little-endian host)."""
    out: dict[str, torch.Tensor] = {}
    offset = 0
    for spec in specs:
        array = np.frombuffer(buffer, dtype=_LE, count=spec.numel, offset=offset)
        native = array.astype(np.float32, copy=False).reshape(spec.shape)
        out[spec.name] = torch.from_numpy(native)
        offset += spec.numel * ITEMSIZE
    return out
