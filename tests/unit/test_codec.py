"""The codec: every v1 message survives bytes and back; malformed bytes are one error type.

Round trips are property tests over generated messages (hypothesis). Malformed input is
each way a frame can be wrong, plus random byte mutations of a good frame: whatever the
damage, ``decode`` returns a message or raises ``ProtocolError``, never anything else.
"""

from __future__ import annotations

import contextlib
import json
import struct
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save

from phalanx.core import codec
from phalanx.core.messages import (
    PROTOCOL_VERSION,
    ClientUpdate,
    Envelope,
    ModelRef,
    PartialWork,
    TaskConfig,
    TaskFailure,
    TaskKey,
    TrainTask,
)
from phalanx.core.models import ModelBook
from phalanx.core.tensors import Manifest, payload_digest
from phalanx.errors import ProtocolError
from phalanx.types import FailureKind

ints = st.integers(min_value=0, max_value=2**40)
text = st.text(max_size=20)
finite = st.floats(allow_nan=False, allow_infinity=False, width=32)
envelopes = st.builds(Envelope, st.just(PROTOCOL_VERSION), text, ints)
keys = st.builds(TaskKey, ints, ints, ints)
refs = st.builds(ModelRef, ints, st.text(alphabet="0123456789abcdef", max_size=64))
configs = st.builds(
    TaskConfig,
    st.integers(1, 100),
    st.integers(1, 4096),
    st.floats(min_value=1e-6, max_value=10.0),
    st.floats(min_value=0.0, max_value=1e6),
    st.none() | st.integers(1, 10**6),
    st.builds(PartialWork, st.booleans(), st.floats(min_value=0.01, max_value=1.0)),
)
tasks = st.builds(TrainTask, envelopes, keys, refs, configs)
failures = st.builds(TaskFailure, keys, st.sampled_from(FailureKind), text, envelopes)


@st.composite
def tensor_dicts(draw: st.DrawFn) -> dict[str, torch.Tensor]:
    names = draw(st.lists(st.text(min_size=1, max_size=8), max_size=4, unique=True))
    out = {}
    for name in names:
        shape = tuple(draw(st.lists(st.integers(0, 3), max_size=3)))
        numel = 1
        for dim in shape:
            numel *= dim
        values = draw(st.lists(finite, min_size=numel, max_size=numel))
        out[name] = torch.tensor(values, dtype=torch.float32).reshape(shape)
    return out


@st.composite
def updates(draw: st.DrawFn) -> ClientUpdate:
    tensors = draw(tensor_dicts())
    return ClientUpdate(
        envelope=draw(envelopes), key=draw(keys), base=draw(refs),
        steps_done=draw(ints), steps_planned=draw(ints), num_examples=draw(ints),
        tensors=tensors, digest=payload_digest(tensors),
        metrics=draw(st.dictionaries(text, finite, max_size=3)),
        sender=draw(st.none() | ints),
    )  # fmt: skip


def same_update(a: ClientUpdate, b: ClientUpdate) -> bool:
    """Equal fields, tensors equal bit for bit and in the same order."""
    if replace(a, tensors={}) != replace(b, tensors={}) or list(a.tensors) != list(b.tensors):
        return False
    return all(
        a.tensors[n].shape == b.tensors[n].shape
        and a.tensors[n].dtype == b.tensors[n].dtype
        and torch.equal(a.tensors[n].view(torch.int32), b.tensors[n].view(torch.int32))
        for n in a.tensors
    )


@given(tasks)
def test_a_task_round_trips(task: TrainTask) -> None:
    assert codec.decode(codec.encode(task)) == task


@given(failures)
def test_a_failure_round_trips(failure: TaskFailure) -> None:
    assert codec.decode(codec.encode(failure)) == failure


@given(updates())
@settings(max_examples=30, deadline=None)
def test_an_update_round_trips_with_its_digest_still_matching(update: ClientUpdate) -> None:
    decoded = codec.decode_as(codec.encode(update), ClientUpdate)
    assert same_update(decoded, update)
    assert payload_digest(decoded.tensors) == update.digest


def sample_update() -> ClientUpdate:
    tensors = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2)}
    return ClientUpdate(
        Envelope(run_id="run"), TaskKey(1, 2, 1), ModelRef(1, "ab"), 3, 4, 10,
        tensors, payload_digest(tensors), {"loss": 0.5}, sender=2,
    )  # fmt: skip


def frame(header: object, body: bytes = b"") -> bytes:
    head = json.dumps(header).encode()
    return struct.pack("<I", len(head)) + head + body


def good_header() -> dict[str, object]:
    header, _ = codec.unpack_frame(codec.encode(sample_update()))
    return header


def failure_header() -> dict[str, object]:
    failure = TaskFailure(TaskKey(0, 1, 1), FailureKind.CRASH)
    return codec.unpack_frame(codec.encode(failure))[0]


def task_header() -> dict[str, object]:
    config = TaskConfig(1, 1, 0.1, 1.0)
    task = TrainTask(Envelope(), TaskKey(0, 0, 0), ModelRef(0, ""), config)
    return codec.unpack_frame(codec.encode(task))[0]


def test_each_kind_of_malformed_bytes_is_a_protocol_error() -> None:
    good = codec.encode(sample_update())
    header = good_header()
    cases = {
        "empty": b"",
        "short length": b"\x01\x00",
        "length past the end": struct.pack("<I", 500) + b"{}",
        "huge length": struct.pack("<I", 2**31) + b"{}",
        "not JSON": struct.pack("<I", 3) + b"{x}",
        "not UTF-8": struct.pack("<I", 2) + b"\xff\xfe",
        "JSON list": frame([1, 2]),
        "truncated tensors": good[:-7],
        "garbage tensors": frame(header, b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage"),
        "unknown type": frame({**header, "type": "mystery"}),
        "missing field": frame({k: v for k, v in header.items() if k != "digest"}),
        "extra field": frame({**header, "extra": 1}),
        "string for int": frame({**header, "steps_done": "3"}),
        "float for int": frame({**header, "num_examples": 10.0}),
        "unknown failure kind": frame({**failure_header(), "kind": "meltdown"}),
        "names disagree with body": frame(
            {**header, "tensors": ["w", "zzz"]}, good[4 + struct.unpack("<I", good[:4])[0] :]
        ),
        "tensors on a task": frame(task_header(), save({"w": torch.ones(1)})),
    }
    for name, data in cases.items():
        with pytest.raises(ProtocolError):
            codec.decode(data)
        assert name  # every case named, for the failure message above


def test_a_wrong_dtype_is_refused_both_ways() -> None:
    update = sample_update()
    half = {"w": update.tensors["w"].double(), "b": update.tensors["b"]}
    with pytest.raises(ProtocolError, match="float64; the wire carries float32 only"):
        codec.encode(replace(update, tensors=half))
    body = save({"w": torch.ones(2, 3, dtype=torch.float16), "b": torch.ones(2)})
    with pytest.raises(ProtocolError, match="float16"):
        codec.decode(frame(good_header(), body))


def test_another_protocol_version_is_named_with_ours() -> None:
    header = good_header()
    envelope = {**header["envelope"], "protocol": 2}  # type: ignore[dict-item]
    with pytest.raises(ProtocolError, match="protocol version 2; this phalanx speaks version 1"):
        codec.decode(frame({**header, "envelope": envelope}))


def test_decode_as_insists_on_the_kind() -> None:
    data = codec.encode(TaskFailure(TaskKey(0, 1, 1), FailureKind.CRASH))
    with pytest.raises(ProtocolError, match="expected a ClientUpdate, got a TaskFailure"):
        codec.decode_as(data, ClientUpdate)
    assert isinstance(codec.decode_event(data), TaskFailure)


@given(st.data())
@settings(max_examples=200, deadline=None)
def test_mutated_bytes_decode_or_raise_protocol_error(data: st.DataObject) -> None:
    raw = bytearray(codec.encode(sample_update()))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(raw) - 1))
        raw[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    with contextlib.suppress(ProtocolError):
        codec.decode(bytes(raw[:cut]))


def test_a_model_travels_by_reference_and_is_checked_on_arrival() -> None:
    manifest = Manifest.of({"w": torch.zeros(2, 2), "b": torch.zeros(2)})
    book = ModelBook(manifest)
    ref = book.publish(3, torch.arange(6.0))
    got_ref, tensors = codec.decode_model(book.payload(ref))
    assert got_ref == ref and torch.equal(tensors["w"], torch.arange(4.0).reshape(2, 2))
    assert book.payload(ref) is book.payload(ref)  # encoded once per version
    forged = codec.encode_model(replace(ref, sha256="0" * 64), tensors)
    with pytest.raises(ProtocolError, match="does not match its sha256"):
        codec.decode_model(forged)


def test_a_frame_carries_tensors_that_share_storage_and_copies_none_it_need_not() -> None:
    """Views of one vector, a repeated tensor and a transposed one: safetensors refuses
    shared or strided storage, so those are copied; a tensor alone on its own contiguous
    storage is packed as it lies (``_owned``), and every one arrives with its values."""
    flat = torch.arange(12, dtype=torch.float32)
    alone = torch.ones(4)
    sent = {
        "a": flat[:6], "b": flat[6:], "again": alone, "alone": alone,
        "t": flat.reshape(3, 4).t(),
    }  # fmt: skip
    owned = codec._owned(sent)
    assert owned["again"] is not owned["alone"]  # one of the two names had to be copied
    assert owned["again"].data_ptr() == alone.data_ptr()  # the first packed as it lies
    assert all(owned[n].data_ptr() != flat.data_ptr() for n in ("a", "b", "t"))
    header, received = codec.unpack_frame(codec.pack_frame({"k": 1}, sent))
    assert header == {"k": 1} and received is not None
    assert all(torch.equal(received[n], t) for n, t in sent.items())


def test_tensors_are_written_as_safetensors_itself_writes_them() -> None:
    """The numpy path of ``_serialised`` is a speed-up only: byte for byte what
    ``safetensors.torch.save`` writes, for every dtype it takes (bfloat16 goes through
    torch), shapes with a zero and scalars included."""
    tensors = {
        "w": torch.randn(3, 4), "b": torch.zeros(0, 2), "s": torch.tensor(2.5, dtype=torch.float64),
        "h": torch.ones(2, dtype=torch.float16), "i": torch.arange(3), "m": torch.tensor([True]),
        "u": torch.arange(4, dtype=torch.uint8), "k": torch.arange(2, dtype=torch.int32),
    }  # fmt: skip
    assert codec._serialised(tensors) == save(tensors)
    brain = {"w": torch.ones(2, dtype=torch.bfloat16), "v": torch.ones(1)}
    assert codec._serialised(brain) == save(brain)
