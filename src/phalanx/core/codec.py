"""Bytes for every v1 message, and back: the one codec, never pickle.

A frame is a 4-byte little-endian header length, a JSON header, then the tensors (if any)
as safetensors. ``pack_frame``/``unpack_frame`` are that layer alone (the simulation's
worker pipe speaks it); ``encode``/``decode`` put the v1 messages of ``core.messages`` on
it, and ``encode_model``/``decode_model`` a published model's tensors.

Decoding trusts nothing: whatever is wrong with the bytes (truncated, lengths that do not
add up, a header that is not the JSON of a v1 message, safetensors that do not parse, a
tensor of a dtype the wire does not allow, another protocol version) raises
``ProtocolError`` naming the problem, and nothing else. The update's payload digest is not
checked here: a digest that does not match is a claim for validation to reject, not a
malformed message.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any, TypeVar

import torch
from pydantic import ValidationError
from safetensors.numpy import save as save_numpy
from safetensors.torch import load, save

from phalanx.core import wire
from phalanx.core.messages import (
    PROTOCOL_VERSION,
    ClientUpdate,
    Envelope,
    Event,
    ModelRef,
    TaskFailure,
    TrainTask,
)
from phalanx.core.tensors import WIRE_DTYPE, WIRE_DTYPE_NAME, dtype_name, payload_digest
from phalanx.errors import ProtocolError

Message = TrainTask | ClientUpdate | TaskFailure
M = TypeVar("M", TrainTask, ClientUpdate, TaskFailure)
Tensors = dict[str, torch.Tensor]

_LEN = struct.Struct("<I")
MAX_HEADER_BYTES = 1 << 20  # a header is metadata; anything larger is not one of ours


def _owned(tensors: Mapping[str, torch.Tensor]) -> Tensors:
    """Each tensor as is if it lies alone on a contiguous CPU storage of its own, else a
    contiguous copy: safetensors refuses tensors that share storage (views of one vector,
    repeated names), and a model's worth of tensors that need no copy is not copied."""
    out: Tensors = {}
    seen: set[int] = set()
    for name, tensor in tensors.items():
        t = tensor.detach().cpu()
        alone = t.untyped_storage().nbytes() == t.numel() * t.element_size()
        if not (
            t.is_contiguous() and alone and t.storage_offset() == 0 and t.data_ptr() not in seen
        ):
            t = t.clone(memory_format=torch.contiguous_format)
        out[name] = t
        seen.add(t.data_ptr())
    return out


# dtypes numpy has too: their safetensors bytes can be written through numpy
_NUMPY_DTYPES = frozenset(
    {torch.float64, torch.float32, torch.float16, torch.int64, torch.int32, torch.int16}
    | {torch.int8, torch.uint8, torch.bool}
)


def _serialised(tensors: Tensors) -> bytes:
    """The safetensors bytes of ``tensors`` (``_owned``: detached, contiguous, on the CPU).
    Through numpy when every dtype has a numpy twin: the very bytes ``safetensors.torch``
    writes, in a quarter of its time for a model's few small tensors (about 25 against
    100 us), which the worker pipe pays on every message."""
    if all(t.dtype in _NUMPY_DTYPES for t in tensors.values()):
        return save_numpy({name: t.numpy() for name, t in tensors.items()})
    return save(tensors)


def pack_frame(header: Mapping[str, Any], tensors: Mapping[str, torch.Tensor] | None) -> bytes:
    """Length, JSON header, safetensors (see ``_owned``). ``None`` sends no tensor section at
    all."""
    head = json.dumps(header, allow_nan=True).encode()
    if len(head) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {len(head)} bytes exceeds {MAX_HEADER_BYTES}")
    if tensors is None:
        return _LEN.pack(len(head)) + head
    return _LEN.pack(len(head)) + head + _serialised(_owned(tensors))


def unpack_frame(data: bytes) -> tuple[dict[str, Any], Tensors | None]:
    """(header, tensors or None) of one frame; ``ProtocolError`` for anything malformed."""
    if len(data) < _LEN.size:
        raise ProtocolError(f"truncated frame: {len(data)} bytes, not even a header length")
    (size,) = _LEN.unpack_from(data)
    if size > MAX_HEADER_BYTES or _LEN.size + size > len(data):
        raise ProtocolError(
            f"header length {size} does not fit a frame of {len(data)} bytes "
            f"(limit {MAX_HEADER_BYTES})"
        )
    try:
        header = json.loads(bytes(data[_LEN.size : _LEN.size + size]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError(f"header is JSON {type(header).__name__}, not an object")
    body = bytes(data[_LEN.size + size :])
    if not body:
        return header, None
    try:
        tensors = load(body)
    except Exception as exc:  # safetensors' own error type; translated at this boundary
        raise ProtocolError(f"tensor section is not valid safetensors: {exc}") from None
    return header, tensors


def encode(message: Message) -> bytes:
    """The bytes of a v1 message."""
    if isinstance(message, ClientUpdate):
        _check_dtypes(message.tensors)
        return pack_frame(wire.UpdateJson.of(message).model_dump(), message.tensors)
    if isinstance(message, TrainTask):
        return pack_frame(wire.TaskJson.of(message).model_dump(), None)
    return pack_frame(wire.FailureJson.of(message).model_dump(), None)


def decode(data: bytes) -> Message:
    """The v1 message in ``data``; ``ProtocolError`` if it is not one."""
    header, tensors = unpack_frame(data)
    _check_version(header)
    try:
        parsed = wire.MESSAGE.validate_python(header)
    except ValidationError as exc:
        raise ProtocolError(f"not a v1 message: {_first_error(exc)}") from None
    if isinstance(parsed, wire.UpdateJson):
        return parsed.build(_ordered(parsed.tensors, tensors))
    if tensors is not None:
        raise ProtocolError(f"a {parsed.type} carries no tensors; this one has {len(tensors)}")
    return parsed.build()


def decode_as(data: bytes, kind: type[M]) -> M:
    """``decode``, and a ``ProtocolError`` unless the message is a ``kind``."""
    message = decode(data)
    if not isinstance(message, kind):
        raise ProtocolError(f"expected a {kind.__name__}, got a {type(message).__name__}")
    return message


def decode_event(data: bytes) -> Event:
    """A client's reply: an update or a failure it reports, never a task."""
    message = decode(data)
    if isinstance(message, TrainTask):
        raise ProtocolError("expected a client's reply, got a TrainTask")
    return message


def encode_model(
    ref: ModelRef, tensors: Mapping[str, torch.Tensor], envelope: Envelope | None = None
) -> bytes:
    """A published model as bytes: its reference, then its tensors."""
    _check_dtypes(tensors)
    header = wire.ModelJson(
        envelope=wire.EnvelopeJson.of(envelope or Envelope()),
        ref=wire.RefJson.of(ref),
        tensors=list(tensors),
    )
    return pack_frame(header.model_dump(), tensors)


def decode_model(data: bytes) -> tuple[ModelRef, Tensors]:
    """(reference, tensors) of a model; ``ProtocolError`` unless the tensors hash to the
    reference's sha256, so a damaged download is never trained on."""
    header, tensors = unpack_frame(data)
    _check_version(header)
    try:
        parsed = wire.ModelJson.model_validate(header)
    except ValidationError as exc:
        raise ProtocolError(f"not a v1 model: {_first_error(exc)}") from None
    ordered = _ordered(parsed.tensors, tensors)
    ref = parsed.ref.build()
    if payload_digest(ordered) != ref.sha256:
        raise ProtocolError(f"model version {ref.version} does not match its sha256")
    return ref, ordered


def _check_version(header: dict[str, Any]) -> None:
    envelope = header.get("envelope")
    protocol = envelope.get("protocol") if isinstance(envelope, dict) else None
    if protocol != PROTOCOL_VERSION:
        raise ProtocolError(
            f"message speaks protocol version {protocol!r}; this phalanx speaks "
            f"version {PROTOCOL_VERSION}"
        )


def _check_dtypes(tensors: Mapping[str, torch.Tensor]) -> None:
    for name, tensor in tensors.items():
        if tensor.dtype != WIRE_DTYPE:
            raise ProtocolError(
                f"tensor {name!r} is {dtype_name(tensor.dtype)}; the wire carries "
                f"{WIRE_DTYPE_NAME} only"
            )


def _ordered(names: list[str], tensors: Tensors | None) -> Tensors:
    """The body's tensors in the header's order, after checking both name the same set."""
    tensors = tensors or {}
    if sorted(names) != sorted(tensors) or len(set(names)) != len(names):
        raise ProtocolError(
            f"header names tensors {sorted(names)}, the body holds {sorted(tensors)}"
        )
    _check_dtypes(tensors)
    return {name: tensors[name] for name in names}


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "header"
    return f"{where}: {error['msg']}"
