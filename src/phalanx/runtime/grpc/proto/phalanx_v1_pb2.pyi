from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Envelope(_message.Message):
    __slots__ = ("protocol", "run_id", "epoch")
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    protocol: int
    run_id: str
    epoch: int
    def __init__(self, protocol: _Optional[int] = ..., run_id: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class TaskKey(_message.Message):
    __slots__ = ("round", "client", "attempt")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    round: int
    client: int
    attempt: int
    def __init__(self, round: _Optional[int] = ..., client: _Optional[int] = ..., attempt: _Optional[int] = ...) -> None: ...

class ModelRef(_message.Message):
    __slots__ = ("version", "sha256")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    version: int
    sha256: str
    def __init__(self, version: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class PartialWork(_message.Message):
    __slots__ = ("enabled", "min_fraction")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    MIN_FRACTION_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    min_fraction: float
    def __init__(self, enabled: _Optional[bool] = ..., min_fraction: _Optional[float] = ...) -> None: ...

class TaskConfig(_message.Message):
    __slots__ = ("local_epochs", "batch_size", "lr", "ttl_s", "max_steps", "partial")
    LOCAL_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    local_epochs: int
    batch_size: int
    lr: float
    ttl_s: float
    max_steps: int
    partial: PartialWork
    def __init__(self, local_epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., lr: _Optional[float] = ..., ttl_s: _Optional[float] = ..., max_steps: _Optional[int] = ..., partial: _Optional[_Union[PartialWork, _Mapping]] = ...) -> None: ...

class TrainTask(_message.Message):
    __slots__ = ("envelope", "key", "model", "config")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    envelope: Envelope
    key: TaskKey
    model: ModelRef
    config: TaskConfig
    def __init__(self, envelope: _Optional[_Union[Envelope, _Mapping]] = ..., key: _Optional[_Union[TaskKey, _Mapping]] = ..., model: _Optional[_Union[ModelRef, _Mapping]] = ..., config: _Optional[_Union[TaskConfig, _Mapping]] = ...) -> None: ...

class TaskFailure(_message.Message):
    __slots__ = ("envelope", "key", "kind", "detail")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    envelope: Envelope
    key: TaskKey
    kind: str
    detail: str
    def __init__(self, envelope: _Optional[_Union[Envelope, _Mapping]] = ..., key: _Optional[_Union[TaskKey, _Mapping]] = ..., kind: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "dtype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("seq", "data")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    seq: int
    data: bytes
    def __init__(self, seq: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class Caller(_message.Message):
    __slots__ = ("envelope", "client_id", "session")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    envelope: Envelope
    client_id: int
    session: str
    def __init__(self, envelope: _Optional[_Union[Envelope, _Mapping]] = ..., client_id: _Optional[int] = ..., session: _Optional[str] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("envelope", "client_id", "credential", "num_examples")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    envelope: Envelope
    client_id: int
    credential: str
    num_examples: int
    def __init__(self, envelope: _Optional[_Union[Envelope, _Mapping]] = ..., client_id: _Optional[int] = ..., credential: _Optional[str] = ..., num_examples: _Optional[int] = ...) -> None: ...

class JoinReply(_message.Message):
    __slots__ = ("envelope", "client_id", "session", "heartbeat_interval_s", "patience_s")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    PATIENCE_S_FIELD_NUMBER: _ClassVar[int]
    envelope: Envelope
    client_id: int
    session: str
    heartbeat_interval_s: float
    patience_s: float
    def __init__(self, envelope: _Optional[_Union[Envelope, _Mapping]] = ..., client_id: _Optional[int] = ..., session: _Optional[str] = ..., heartbeat_interval_s: _Optional[float] = ..., patience_s: _Optional[float] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("caller",)
    CALLER_FIELD_NUMBER: _ClassVar[int]
    caller: Caller
    def __init__(self, caller: _Optional[_Union[Caller, _Mapping]] = ...) -> None: ...

class HeartbeatReply(_message.Message):
    __slots__ = ("envelope", "cancelled")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    envelope: Envelope
    cancelled: _containers.RepeatedCompositeFieldContainer[TaskKey]
    def __init__(self, envelope: _Optional[_Union[Envelope, _Mapping]] = ..., cancelled: _Optional[_Iterable[_Union[TaskKey, _Mapping]]] = ...) -> None: ...

class PullTaskRequest(_message.Message):
    __slots__ = ("caller",)
    CALLER_FIELD_NUMBER: _ClassVar[int]
    caller: Caller
    def __init__(self, caller: _Optional[_Union[Caller, _Mapping]] = ...) -> None: ...

class PullTaskReply(_message.Message):
    __slots__ = ("envelope", "status", "task")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[PullTaskReply.Status]
        TASK: _ClassVar[PullTaskReply.Status]
        NONE_YET: _ClassVar[PullTaskReply.Status]
        FINISHED: _ClassVar[PullTaskReply.Status]
    STATUS_UNSPECIFIED: PullTaskReply.Status
    TASK: PullTaskReply.Status
    NONE_YET: PullTaskReply.Status
    FINISHED: PullTaskReply.Status
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    envelope: Envelope
    status: PullTaskReply.Status
    task: TrainTask
    def __init__(self, envelope: _Optional[_Union[Envelope, _Mapping]] = ..., status: _Optional[_Union[PullTaskReply.Status, str]] = ..., task: _Optional[_Union[TrainTask, _Mapping]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("caller", "ref")
    CALLER_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    caller: Caller
    ref: ModelRef
    def __init__(self, caller: _Optional[_Union[Caller, _Mapping]] = ..., ref: _Optional[_Union[ModelRef, _Mapping]] = ...) -> None: ...

class ModelHeader(_message.Message):
    __slots__ = ("envelope", "ref", "tensors", "total_bytes")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    envelope: Envelope
    ref: ModelRef
    tensors: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    total_bytes: int
    def __init__(self, envelope: _Optional[_Union[Envelope, _Mapping]] = ..., ref: _Optional[_Union[ModelRef, _Mapping]] = ..., tensors: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., total_bytes: _Optional[int] = ...) -> None: ...

class ModelPart(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: ModelHeader
    chunk: Chunk
    def __init__(self, header: _Optional[_Union[ModelHeader, _Mapping]] = ..., chunk: _Optional[_Union[Chunk, _Mapping]] = ...) -> None: ...

class UpdateHeader(_message.Message):
    __slots__ = ("envelope", "key", "base", "steps_done", "steps_planned", "num_examples", "metrics", "tensors", "digest", "total_bytes")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    STEPS_DONE_FIELD_NUMBER: _ClassVar[int]
    STEPS_PLANNED_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    envelope: Envelope
    key: TaskKey
    base: ModelRef
    steps_done: int
    steps_planned: int
    num_examples: int
    metrics: _containers.ScalarMap[str, float]
    tensors: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    digest: str
    total_bytes: int
    def __init__(self, envelope: _Optional[_Union[Envelope, _Mapping]] = ..., key: _Optional[_Union[TaskKey, _Mapping]] = ..., base: _Optional[_Union[ModelRef, _Mapping]] = ..., steps_done: _Optional[int] = ..., steps_planned: _Optional[int] = ..., num_examples: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., tensors: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., digest: _Optional[str] = ..., total_bytes: _Optional[int] = ...) -> None: ...

class UpdateStart(_message.Message):
    __slots__ = ("caller", "header")
    CALLER_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    caller: Caller
    header: UpdateHeader
    def __init__(self, caller: _Optional[_Union[Caller, _Mapping]] = ..., header: _Optional[_Union[UpdateHeader, _Mapping]] = ...) -> None: ...

class UpdatePart(_message.Message):
    __slots__ = ("start", "chunk")
    START_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    start: UpdateStart
    chunk: Chunk
    def __init__(self, start: _Optional[_Union[UpdateStart, _Mapping]] = ..., chunk: _Optional[_Union[Chunk, _Mapping]] = ...) -> None: ...

class PushUpdateReply(_message.Message):
    __slots__ = ("envelope", "key")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    envelope: Envelope
    key: TaskKey
    def __init__(self, envelope: _Optional[_Union[Envelope, _Mapping]] = ..., key: _Optional[_Union[TaskKey, _Mapping]] = ...) -> None: ...

class ReportFailureRequest(_message.Message):
    __slots__ = ("caller", "failure")
    CALLER_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    caller: Caller
    failure: TaskFailure
    def __init__(self, caller: _Optional[_Union[Caller, _Mapping]] = ..., failure: _Optional[_Union[TaskFailure, _Mapping]] = ...) -> None: ...

class LeaveRequest(_message.Message):
    __slots__ = ("caller", "reason")
    CALLER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    caller: Caller
    reason: str
    def __init__(self, caller: _Optional[_Union[Caller, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("envelope",)
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    envelope: Envelope
    def __init__(self, envelope: _Optional[_Union[Envelope, _Mapping]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ("envelope", "credential")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    envelope: Envelope
    credential: str
    def __init__(self, envelope: _Optional[_Union[Envelope, _Mapping]] = ..., credential: _Optional[str] = ...) -> None: ...

class MemberStatus(_message.Message):
    __slots__ = ("client_id", "live", "heartbeat_age_s")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_AGE_S_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    live: bool
    heartbeat_age_s: float
    def __init__(self, client_id: _Optional[int] = ..., live: _Optional[bool] = ..., heartbeat_age_s: _Optional[float] = ...) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("envelope", "members", "round_in_flight", "rounds_committed", "rounds_failed")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    ROUND_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_COMMITTED_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FAILED_FIELD_NUMBER: _ClassVar[int]
    envelope: Envelope
    members: _containers.RepeatedCompositeFieldContainer[MemberStatus]
    round_in_flight: int
    rounds_committed: int
    rounds_failed: int
    def __init__(self, envelope: _Optional[_Union[Envelope, _Mapping]] = ..., members: _Optional[_Iterable[_Union[MemberStatus, _Mapping]]] = ..., round_in_flight: _Optional[int] = ..., rounds_committed: _Optional[int] = ..., rounds_failed: _Optional[int] = ...) -> None: ...
