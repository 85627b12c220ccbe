"""The chunk assembler takes exactly the stream its header announced, in order, and refuses
everything else with a ProtocolError that says what was wrong."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from phalanx.core.messages import Envelope, ModelRef
from phalanx.core.models import ModelBook
from phalanx.core.tensors import Manifest, TensorSpec, flatten, payload_digest
from phalanx.errors import ProtocolError, SizeLimitError, StaleError
from phalanx.runtime.grpc.assembly import Assembler, WireLimits, chunks, raw_bytes, specs_of
from phalanx.runtime.grpc.handlers import model_payload
from phalanx.runtime.grpc.session import ModelPayload

TENSORS = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([-1.5, 2.0])}
DIGEST = payload_digest(TENSORS)
DATA = raw_bytes(TENSORS)  # 32 bytes
LIMITS = WireLimits(max_bytes=64, max_chunk_bytes=12, chunk_bytes=12)


def assembler(limits: WireLimits = LIMITS) -> Assembler:
    return Assembler(specs_of(TENSORS), len(DATA), limits, "update 1/2/3")


def pieces() -> list[bytes]:
    return [bytes(piece) for _, piece in chunks(DATA, 12)]


def test_chunks_in_order_give_back_the_tensors_bit_for_bit() -> None:
    receiver = assembler()
    for seq, piece in enumerate(pieces()):
        receiver.add(seq, piece)
    got = receiver.finish(DIGEST)
    assert list(got) == ["w", "b"]
    assert all(torch.equal(got[n], TENSORS[n]) for n in TENSORS)
    assert DATA[4:8] == b"\x00\x00\x80\x3f"  # 1.0 as little-endian float32
    assert DATA[-4:] == b"\x00\x00\x00\x40"  # 2.0 as little-endian float32


@pytest.mark.parametrize(
    ("order", "message"),
    [
        ([1, 0, 2], "chunk 1 out of order .* expected 0"),
        ([0, 2], "chunk 2 out of order .* expected 1"),
        ([0, 0, 1, 2], "chunk 0 repeated; expected 1"),
    ],
)
def test_out_of_order_missing_and_repeated_chunks_are_refused(
    order: list[int], message: str
) -> None:
    receiver = assembler()
    with pytest.raises(ProtocolError, match=message):
        for seq in order:
            receiver.add(seq, pieces()[seq])


def test_a_stream_that_ends_short_is_refused() -> None:
    receiver = assembler()
    receiver.add(0, pieces()[0])
    with pytest.raises(ProtocolError, match="ended after 12 of 32 bytes"):
        receiver.finish(DIGEST)


def test_bytes_past_the_announced_size_are_refused_before_they_are_buffered() -> None:
    receiver = assembler()
    for seq, piece in enumerate(pieces()):
        receiver.add(seq, piece)
    with pytest.raises(SizeLimitError, match="chunk 3 brings 33 bytes; 32 were announced"):
        receiver.add(3, b"x")
    assert receiver.received == len(DATA)


def test_an_announced_size_over_the_limit_is_refused_before_any_chunk() -> None:
    with pytest.raises(SizeLimitError, match="update 1/2/3 of 32 bytes exceeds the limit of 31"):
        assembler(WireLimits(max_bytes=31, max_chunk_bytes=12, chunk_bytes=12))


def test_oversized_and_empty_chunks_are_refused() -> None:
    with pytest.raises(SizeLimitError, match="chunk 0 of 13 bytes exceeds the chunk limit of 12"):
        assembler().add(0, DATA[:13])
    with pytest.raises(ProtocolError, match="chunk 0 is empty"):
        assembler().add(0, b"")


def test_tensors_that_do_not_match_the_digest_are_refused() -> None:
    receiver = assembler()
    flipped = bytearray(DATA)
    flipped[5] ^= 0x01
    for seq, piece in chunks(bytes(flipped), 12):
        receiver.add(seq, bytes(piece))
    with pytest.raises(ProtocolError, match="do not match their digest"):
        receiver.finish(DIGEST)


@pytest.mark.parametrize(
    ("specs", "total", "message"),
    [
        ((TensorSpec("w", (2,), "float64"),), 16, "'float64'; the wire carries float32"),
        ((TensorSpec("w", (-1, 2)),), 8, r"has shape \(-1, 2\)"),
        ((TensorSpec("w", (2,)), TensorSpec("w", (2,))), 16, "names its tensors twice"),
        ((TensorSpec("", (2,)),), 8, "with an empty name"),
        ((TensorSpec("w", (3,)),), 8, "do not add up to its 8 bytes"),
        ((TensorSpec("w", (2**62, 2**62)),), 8, "has shape"),
        ((TensorSpec("w", (0, 2**62)),), 0, r"has shape \(0, 4611686018427387904\)"),
        ((TensorSpec("w", (0, 4)), TensorSpec("b", (2,))), 8, None),
        ((TensorSpec("w", (1,) * 33),), 4, "has shape"),
        ((), -4, "announces -4 bytes"),
    ],
)
def test_specs_that_do_not_describe_the_bytes_are_refused(
    specs: tuple[TensorSpec, ...], total: int, message: str | None
) -> None:
    if message is None:  # the control: an empty tensor of a sane shape is fine
        Assembler(specs, total, LIMITS, "update")
        return
    with pytest.raises(ProtocolError, match=message):
        Assembler(specs, total, LIMITS, "update")


def test_limits_must_be_consistent() -> None:
    with pytest.raises(ValueError, match="chunk_bytes <= max_chunk_bytes"):
        WireLimits(max_chunk_bytes=8, chunk_bytes=16)


def test_a_published_model_travels_as_its_own_bytes_and_a_dropped_version_is_stale() -> None:
    manifest = Manifest.of(TENSORS)
    book = ModelBook(manifest, keep=1)
    params = flatten(TENSORS, manifest)
    ref = book.publish(1, params)
    payload = model_payload(book, ref, Envelope())
    assert bytes(payload.data) == DATA and payload.specs == specs_of(TENSORS)
    view = np.frombuffer(payload.data, dtype="<f4")
    assert np.shares_memory(view, params.numpy())  # the published vector's bytes, no copy
    receiver = Assembler(payload.specs, len(payload.data), LIMITS, "model")
    for seq, piece in chunks(payload.data, 12):
        receiver.add(seq, piece)
    assert payload_digest(receiver.finish(ref.sha256)) == ref.sha256
    book.publish(2, params + 1)
    with pytest.raises(StaleError, match=r"model version 1 .* is not held"):
        model_payload(book, ModelRef(1, ref.sha256), Envelope())


def test_a_payload_counts_bytes_whatever_its_views_item_format() -> None:
    floats = memoryview(np.arange(8, dtype="<f4"))  # 8 items, 32 bytes
    payload = ModelPayload(Envelope(), ModelRef(0, ""), (TensorSpec("w", (8,)),), floats)
    assert payload.header.total_bytes == 32
    assert b"".join(bytes(piece) for _, piece in chunks(floats, 12)) == floats.tobytes()
