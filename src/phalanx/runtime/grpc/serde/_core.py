"""Helpers and the v1 contract's messages (core.messages) to and from protobuf, for the
request and reply modules beside this one. Parsers trust nothing (see the package's
docstring)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import wraps
from typing import ParamSpec, TypeVar

from google.protobuf.message import DecodeError, Message

from phalanx.core.messages import (
    PROTOCOL_VERSION,
    Envelope,
    ModelRef,
    PartialWork,
    TaskConfig,
    TaskFailure,
    TaskKey,
    TrainTask,
)
from phalanx.core.tensors import TensorSpec
from phalanx.errors import ProtocolError, VersionMismatchError
from phalanx.runtime.grpc.proto import phalanx_v1_pb2 as pb
from phalanx.runtime.grpc.serde.chunks import parse_chunk_part
from phalanx.runtime.grpc.session import Caller, Chunk
from phalanx.types import FailureKind

SERVICE = pb.DESCRIPTOR.services_by_name["Coordinator"]
METHODS = tuple(method.name for method in SERVICE.methods)
P = ParamSpec("P")
M = TypeVar("M", bound=Message)
Part = TypeVar("Part", pb.UpdatePart, pb.ModelPart)  # the streamed parts: a chunk or a header
_KINDS = {kind.value: kind for kind in FailureKind}


def method_path(name: str) -> str:
    """The gRPC path of a ``Coordinator`` method, e.g. ``/phalanx.v1.Coordinator/Join``."""
    if name not in METHODS:
        raise ValueError(f"no method {name!r} in {SERVICE.full_name}; methods: {METHODS}")
    return f"/{SERVICE.full_name}/{name}"


def encoder(fn: Callable[P, Message]) -> Callable[P, bytes]:
    """Serialise what ``fn`` builds; a value protobuf cannot hold (an int beyond 64 bits, a
    name that is not text) is a ``ProtocolError``."""

    @wraps(fn)
    def encode(*args: P.args, **kwargs: P.kwargs) -> bytes:
        try:
            return fn(*args, **kwargs).SerializeToString()
        except (ValueError, TypeError) as exc:
            raise ProtocolError(f"cannot encode {fn.__name__}: {exc}") from None

    return encode


def parse_message(cls: type[M], data: bytes) -> M:
    message = cls()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise ProtocolError(f"not a {cls.DESCRIPTOR.full_name}: {exc}") from None
    return message


def require(message: Message, *fields: str) -> None:
    for field in fields:
        if not message.HasField(field):
            raise ProtocolError(f"{message.DESCRIPTOR.full_name} has no {field}")


# -- the v1 contract (core.messages) -------------------------------------------------------


def envelope_of(part: pb.Envelope, peer: str) -> Envelope:
    """The envelope, refused unless it speaks this protocol version."""
    if part.protocol != PROTOCOL_VERSION:
        raise VersionMismatchError(
            f"the {peer} speaks protocol version {part.protocol}; this phalanx speaks "
            f"version {PROTOCOL_VERSION}"
        )
    return Envelope(part.protocol, part.run_id, part.epoch)


def envelope_pb(envelope: Envelope) -> pb.Envelope:
    return pb.Envelope(protocol=envelope.protocol, run_id=envelope.run_id, epoch=envelope.epoch)


def key_of(part: pb.TaskKey) -> TaskKey:
    return TaskKey(part.round, part.client, part.attempt)


def key_pb(key: TaskKey) -> pb.TaskKey:
    return pb.TaskKey(round=key.round, client=key.client, attempt=key.attempt)


def ref_of(part: pb.ModelRef) -> ModelRef:
    return ModelRef(part.version, part.sha256)


def ref_pb(ref: ModelRef) -> pb.ModelRef:
    return pb.ModelRef(version=ref.version, sha256=ref.sha256)


def config_of(part: pb.TaskConfig) -> TaskConfig:
    require(part, "partial")
    partial = PartialWork(part.partial.enabled, part.partial.min_fraction)
    max_steps = part.max_steps if part.HasField("max_steps") else None
    return TaskConfig(part.local_epochs, part.batch_size, part.lr, part.ttl_s, max_steps, partial)


def config_pb(config: TaskConfig) -> pb.TaskConfig:
    partial = pb.PartialWork(
        enabled=config.partial.enabled, min_fraction=config.partial.min_fraction
    )
    return pb.TaskConfig(
        local_epochs=config.local_epochs, batch_size=config.batch_size, lr=config.lr,
        ttl_s=config.ttl_s, max_steps=config.max_steps, partial=partial,
    )  # fmt: skip


def task_of(part: pb.TrainTask, peer: str) -> TrainTask:
    require(part, "envelope", "key", "model", "config")
    return TrainTask(
        envelope_of(part.envelope, peer),
        key_of(part.key),
        ref_of(part.model),
        config_of(part.config),
    )


def task_pb(task: TrainTask) -> pb.TrainTask:
    return pb.TrainTask(
        envelope=envelope_pb(task.envelope), key=key_pb(task.key),
        model=ref_pb(task.model), config=config_pb(task.config),
    )  # fmt: skip


def failure_of(part: pb.TaskFailure, peer: str) -> TaskFailure:
    require(part, "envelope", "key")
    kind = _KINDS.get(part.kind)
    if kind is None:
        raise ProtocolError(f"unknown failure kind {part.kind!r}; kinds: {sorted(_KINDS)}")
    return TaskFailure(key_of(part.key), kind, part.detail, envelope_of(part.envelope, peer))


def failure_pb(failure: TaskFailure) -> pb.TaskFailure:
    return pb.TaskFailure(
        envelope=envelope_pb(failure.envelope), key=key_pb(failure.key),
        kind=failure.kind.value, detail=failure.detail,
    )  # fmt: skip


def tensor_specs_of(parts: Iterable[pb.TensorSpec]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(p.name, tuple(p.shape), p.dtype) for p in parts)


def specs_pb(specs: tuple[TensorSpec, ...]) -> list[pb.TensorSpec]:
    return [pb.TensorSpec(name=s.name, dtype=s.dtype, shape=s.shape) for s in specs]


def caller_of(part: pb.Caller) -> Caller:
    require(part, "envelope")
    return Caller(envelope_of(part.envelope, "client"), part.client_id, part.session)


def caller_pb(caller: Caller) -> pb.Caller:
    envelope = envelope_pb(caller.envelope)
    return pb.Caller(envelope=envelope, client_id=caller.client, session=caller.session)


def chunk_of(part: pb.Chunk) -> Chunk:
    return Chunk(part.seq, part.data)


def chunk_or_part(cls: type[Part], data: bytes) -> Chunk | Part:
    """A push's or download's part: its chunk, read without a copy when in the canonical
    form (``chunks.parse_chunk_part``), else the generated parser's chunk or other member."""
    fast = parse_chunk_part(data)
    if fast is not None:
        return fast
    message = parse_message(cls, data)
    return chunk_of(message.chunk) if message.HasField("chunk") else message
