"""Small shared vocabulary: ids and the enumerations that history and summaries use."""

from __future__ import annotations

from enum import StrEnum

ClientId = int


class FailureKind(StrEnum):
    """How a dispatched task failed, as the engine observed it (not as a client claims)."""

    CRASH = "crash"  # the client or its connection died before replying
    TIMEOUT = "timeout"  # no reply before the task's deadline (hung, straggling, lost)
    DROP = "drop"  # the reply was lost in transit and the transport noticed
    REJECTED = "rejected"  # a reply arrived but failed validation


class FaultKind(StrEnum):
    """What a fault plan injects into a simulated client."""

    CRASH = "crash"
    HANG = "hang"
    STRAGGLE = "straggle"
    DROP = "drop"
    CORRUPT = "corrupt"


class Corruption(StrEnum):
    """How a corrupt fault damages an update. All but bitflip are made by the client itself,
    which then reports success with a matching checksum; bitflip damages bytes in transit."""

    NOISE = "noise"
    NAN = "nan"
    BITFLIP = "bitflip"
    SCALE = "scale"


class RejectReason(StrEnum):
    """Why validation refused an update; every rejection carries exactly one."""

    SCHEMA = "schema"  # tensor names differ from the model's
    SHAPE = "shape"
    DTYPE = "dtype"
    NON_FINITE = "non_finite"
    NORM_ABSOLUTE = "norm_absolute"
    NORM_RELATIVE = "norm_relative"
    VERSION = "version"  # trained on another model version than the one dispatched
    ROUND = "round"  # answers another round or attempt than the one in flight
    CHECKSUM = "checksum"
    SIZE = "size"
    EXAMPLES = "examples"  # claimed example count or steps done out of range
    SENDER = "sender"  # the transport's sender is not the client the task went to


class HealthState(StrEnum):
    HEALTHY = "healthy"
    SIDELINED = "sidelined"
    PROBATION = "probation"
