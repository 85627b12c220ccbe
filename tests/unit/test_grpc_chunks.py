"""The hand-written chunk codec agrees with the generated code byte for byte, and leaves
every non-canonical message to the generated parser."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from phalanx.runtime.grpc.assembly import chunk_pieces, tensor_views
from phalanx.runtime.grpc.proto import phalanx_v1_pb2 as pb
from phalanx.runtime.grpc.serde.chunks import chunk_part, parse_chunk_part

SEQS = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)


@given(seq=SEQS, data=st.binary(max_size=300), cut=st.integers(0, 300))
def test_chunk_part_is_what_the_generated_code_writes(seq: int, data: bytes, cut: int) -> None:
    pieces = [memoryview(data)[:cut], memoryview(data)[cut:]]
    expected = pb.UpdatePart(chunk=pb.Chunk(seq=seq, data=data)).SerializeToString()
    assert chunk_part(seq, pieces) == expected
    assert pb.ModelPart(chunk=pb.Chunk(seq=seq, data=data)).SerializeToString() == expected


@given(seq=SEQS, data=st.binary(max_size=300))
def test_parse_reads_back_what_the_generated_code_writes(seq: int, data: bytes) -> None:
    wire = pb.UpdatePart(chunk=pb.Chunk(seq=seq, data=data)).SerializeToString()
    chunk = parse_chunk_part(wire)
    if chunk is None:  # left to the generated parser: only the zero-seq form is
        assert seq == 0
        return
    assert (chunk.seq, bytes(chunk.data)) == (seq, data)


@given(wire=st.binary(max_size=64))
def test_anything_the_fast_path_accepts_the_generated_parser_reads_the_same(wire: bytes) -> None:
    chunk = parse_chunk_part(wire)
    if chunk is None:
        return
    message = pb.UpdatePart()
    message.ParseFromString(wire)
    assert message.HasField("chunk")
    assert (message.chunk.seq, message.chunk.data) == (chunk.seq, bytes(chunk.data))


def test_non_canonical_forms_are_left_to_the_generated_parser() -> None:
    data_then_seq = bytes([0x12, 0x05, 0x12, 0x01, 0x41, 0x08, 0x07])  # fields reordered
    assert parse_chunk_part(data_then_seq) is None
    header_member = pb.UpdatePart(start=pb.UpdateStart()).SerializeToString()
    assert parse_chunk_part(header_member) is None
    trailing = pb.UpdatePart(chunk=pb.Chunk(seq=3, data=b"ab")).SerializeToString() + b"\x00"
    assert parse_chunk_part(trailing) is None


def test_chunk_pieces_cut_across_tensors_without_copying() -> None:
    tensors = {"a": torch.arange(5, dtype=torch.float32), "b": torch.arange(3, dtype=torch.float32)}
    views = tensor_views(tensors)
    cut = list(chunk_pieces(views, 12))
    assert [seq for seq, _ in cut] == [0, 1, 2]
    joined = b"".join(bytes(p) for _, pieces in cut for p in pieces)
    assert joined == b"".join(t.numpy().tobytes() for t in tensors.values())
    assert [sum(len(p) for p in pieces) for _, pieces in cut] == [12, 12, 8]
    assert cut[1][1][0].obj is views[0].obj  # a slice of the tensor's own memory
