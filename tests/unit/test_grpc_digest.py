"""A stream's digest hashed as its bytes arrive is ``payload_digest`` of the tensors it
carries, whatever the tensors' order, names, sizes and where the feeds fall; and assembly
buffers come back to the pool only once nothing views them."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.core.tensors import payload_digest
from phalanx.errors import ProtocolError
from phalanx.runtime.grpc.assembly import ITEMSIZE, Assembler, WireLimits, raw_bytes, specs_of
from phalanx.runtime.grpc.buffers import BufferPool
from phalanx.runtime.grpc.digest import RunningDigest

NAMES = st.text(alphabet="abcxyz._", min_size=1, max_size=4)
TENSOR_SETS = st.dictionaries(NAMES, st.integers(0, 40), min_size=1, max_size=5).map(
    lambda sizes: {
        n: torch.randn(k, generator=torch.Generator().manual_seed(k)) for n, k in sizes.items()
    }
)


@settings(max_examples=200, deadline=None)
@given(tensors=TENSOR_SETS, cuts=st.lists(st.integers(0, 400), max_size=8))
def test_hashing_as_bytes_arrive_gives_the_payload_digest(
    tensors: dict[str, torch.Tensor], cuts: list[int]
) -> None:
    data = raw_bytes(tensors)
    digest = RunningDigest(specs_of(tensors), ITEMSIZE)
    buffer = memoryview(bytearray(len(data)))
    received = 0
    for cut in sorted(min(c, len(data)) for c in cuts):  # bytes arrive, a feed now and then
        buffer[received:cut] = data[received:cut]
        received = max(received, cut)
        digest.feed(buffer, received)
    buffer[received:] = data[received:]
    assert digest.hexdigest(buffer, len(data)) == payload_digest(tensors)


def test_tensors_in_sorted_order_are_hashed_as_they_arrive_others_wait() -> None:
    ordered = {"a": torch.ones(4), "b": torch.ones(4)}
    unordered = {"b": torch.ones(4), "a": torch.ones(4)}
    for tensors, hashed_after_half in ((ordered, 16), (unordered, 0)):
        digest = RunningDigest(specs_of(tensors), ITEMSIZE)
        data = memoryview(raw_bytes(tensors))
        digest.feed(data, 16)  # the first tensor's bytes are in
        assert digest.hashed == hashed_after_half
        assert digest.hexdigest(data, 32) == payload_digest(tensors)


@pytest.mark.parametrize("flip", [False, True])
def test_an_assembler_hashing_ahead_gives_the_tensors_or_refuses_a_wrong_digest(
    flip: bool,
) -> None:
    tensors = {"w": torch.arange(64.0), "b": torch.ones(8)}  # "b" hashes first, arrives last
    data = bytearray(raw_bytes(tensors))
    if flip:
        data[-1] ^= 0x40
    limits = WireLimits(max_bytes=1 << 10, max_chunk_bytes=32, chunk_bytes=32)
    assembler = Assembler(specs_of(tensors), len(data), limits, "update")
    for seq, start in enumerate(range(0, len(data), 32)):
        assembler.add(seq, bytes(data[start : start + 32]))
        assembler.hash_ahead()
        assert assembler.unhashed == (0 if start + 32 >= len(data) else assembler.received)
    if flip:
        with pytest.raises(ProtocolError, match="do not match their digest"):
            assembler.finish(payload_digest(tensors))
        return
    got = assembler.finish(payload_digest(tensors))
    assert all(torch.equal(got[n], tensors[n]) for n in tensors)


def test_a_buffer_returns_to_the_pool_only_when_nothing_views_it() -> None:
    pool = BufferPool(max_bytes=64, min_bytes=8)
    array = pool.take(32)
    tensor = torch.from_numpy(np.frombuffer(array, dtype="<f4", count=4, offset=16))
    del array
    gc.collect()
    assert pool.idle_bytes == 0  # the tensor still views it
    del tensor
    gc.collect()
    assert pool.idle_bytes == 32
    again = pool.take(32)
    assert pool.idle_bytes == 0 and again.size == 32


def test_the_pool_keeps_at_most_its_cap_and_leaves_small_buffers_alone() -> None:
    pool = BufferPool(max_bytes=64, min_bytes=8)
    arrays = [pool.take(32) for _ in range(3)]
    small = pool.take(4)
    del arrays, small
    gc.collect()
    assert pool.idle_bytes == 64  # two of three kept; the small one never pooled
    pool.clear()
    assert pool.idle_bytes == 0
