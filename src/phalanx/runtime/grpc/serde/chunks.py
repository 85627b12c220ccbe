"""The chunk messages of a push or a model download, without the generated code's copies.

A chunk travels as ``UpdatePart{chunk: Chunk{seq, data}}`` or ``ModelPart{chunk: ...}``;
both put the chunk in field 2, so the bytes are the same. Through the generated classes a
chunk's data is copied three times on the way out (into the message, into its serialised
form, and once before, to concatenate the tensors) and twice on the way in (out of the
message, into the assembly buffer): for 10M-float updates those copies were most of a push's
CPU time. Here a chunk is written as its few header bytes and its data joined once, and read
as a view into the received bytes.

The encoder writes exactly what the generated code writes (a test compares them); the
parser takes only that canonical form and returns None for anything else (fields reordered
or repeated, unknown fields, another oneof member), which the caller then hands to the
generated parser, so what is accepted and refused is the generated code's decision.
"""

from __future__ import annotations

from collections.abc import Iterable

from phalanx.runtime.grpc.session import Chunk

_CHUNK_FIELD = 0x12  # field 2, length-delimited: the Chunk member of UpdatePart/ModelPart
_SEQ = 0x08  # Chunk.seq: field 1, varint
_DATA = 0x12  # Chunk.data: field 2, length-delimited
_INT64 = 1 << 64


def _varint(value: int) -> bytes:
    value %= _INT64  # int64 on the wire: a negative is its two's complement, 10 bytes
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def chunk_part(seq: int, pieces: Iterable[memoryview | bytes]) -> bytes:
    """The serialised part holding chunk ``seq`` whose data is ``pieces`` concatenated; the
    data is copied once, into the result."""
    parts = list(pieces)
    size = sum(len(p) for p in parts)
    inner = (bytes([_SEQ]) + _varint(seq) if seq else b"") + (
        bytes([_DATA]) + _varint(size) if size else b""
    )
    head = bytes([_CHUNK_FIELD]) + _varint(len(inner) + size) + inner
    return b"".join([head, *parts]) if size else head


def _read_varint(data: memoryview, at: int) -> tuple[int, int] | None:
    value = shift = 0
    while at < len(data) and shift < 70:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if byte < 0x80:
            return value, at
        shift += 7
    return None


def parse_chunk_part(data: bytes | memoryview) -> Chunk | None:
    """The chunk in ``data`` when it is in the canonical form ``chunk_part`` writes (data a
    view into ``data``, no copy); None for anything else, left to the generated parser."""
    view = memoryview(data)
    if len(view) < 2 or view[0] != _CHUNK_FIELD:
        return None
    length = _read_varint(view, 1)
    if length is None or length[1] + length[0] != len(view):
        return None
    at, seq = length[1], 0
    if at < len(view) and view[at] == _SEQ:
        read = _read_varint(view, at + 1)
        if read is None:
            return None
        seq, at = read
        if seq == 0:  # not canonical (proto3 omits a zero): let the generated parser judge
            return None
        if seq >= 1 << 63:
            seq -= _INT64
    if at == len(view):
        return Chunk(seq, b"")
    if view[at] != _DATA:
        return None
    size = _read_varint(view, at + 1)
    if size is None or size[0] == 0 or size[1] + size[0] != len(view):
        return None
    return Chunk(seq, view[size[1] :])
