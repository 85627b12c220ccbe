"""The one exception tree of phalanx.

Faults of clients are *inputs* to the engine and never raise; these exceptions are for the
caller's mistakes and for the coordinator's own failures::

    PhalanxError                      exit code 1
    ├── ConfigError                   exit code 2  bad key, value or registry name
    ├── WorkloadError                 exit code 3  a data set or model cannot be built
    ├── AggregationError              exit code 4  an aggregator cannot run on its input
    │   └── MemoryBudgetError         exit code 4  holding one more update would pass the budget
    ├── CheckpointError               exit code 5  nothing valid to resume from, write failed
    ├── RuntimeBackendError           exit code 6  a runtime broke (not a client: the transport)
    ├── LockedError                   exit code 7  another process holds a run or store directory
    ├── NoProgressError               exit code 8  the run ended without committing any round
    ├── StorageError                  exit code 9  outputs cannot be written (disk full, read-only)
    ├── ProtocolError                 exit code 10 malformed message bytes, or another version
    │   ├── VersionMismatchError      exit code 10 the peer speaks another protocol version
    │   └── SizeLimitError            exit code 10 a message or upload over its size limit
    ├── AuthError                     exit code 11 the coordinator refuses the credential
    │   └── PermissionDeniedError     exit code 11 a client acting as another, or not allowed
    ├── RunMismatchError              exit code 12 a coordinator answers for another run than the
    │                                              one this client joined
    ├── RefusedError                  exit code 1  a well-formed request the coordinator refuses
    │   ├── StaleError                             late, stale (older model or round), unknown task
    │   ├── DuplicateError                         a submission already received (same task key)
    │   ├── BusyError                              over a rate or in-flight limit: try later
    │   └── NotLeaderError                         this coordinator does not lead; ``leader`` hints
    └── StaleStateError               exit code 1  a round started from a superseded ServerState

Signals: the first SIGINT ends a run with exit code 130, SIGTERM with 143 (128 + signal).

Foreign errors (pydantic, OS, safetensors, grpc) are translated where they enter: config
loading, checkpoint I/O, the message codec and the runtimes (``runtime/grpc/errors.py`` maps
these errors to gRPC status codes and back).
"""

from __future__ import annotations


class PhalanxError(Exception):
    """Base of every error phalanx raises on purpose."""

    exit_code = 1


class ConfigError(PhalanxError):
    """A configuration key, value or registry name is invalid; the message names it."""

    exit_code = 2


class WorkloadError(PhalanxError):
    """A workload's data or model cannot be built from its parameters."""

    exit_code = 3


class AggregationError(PhalanxError):
    """An aggregator was given input it cannot handle (shape, tolerance, weights)."""

    exit_code = 4


class MemoryBudgetError(AggregationError):
    """Holding one more update would exceed ``aggregation.memory_budget_bytes``."""


class CheckpointError(PhalanxError):
    """A checkpoint cannot be written, or no valid checkpoint exists to resume from."""

    exit_code = 5


class RuntimeBackendError(PhalanxError):
    """The runtime itself (not a client) failed: a worker pool died, a transport broke."""

    exit_code = 6


class LockedError(PhalanxError):
    """Another live process holds a run directory or a checkpoint store; the message names it."""

    exit_code = 7


class NoProgressError(PhalanxError):
    """The run ended without committing a single round: every round was discarded."""

    exit_code = 8


class StorageError(PhalanxError):
    """The run's outputs cannot be written: disk full, read-only, or a path that is a file."""

    exit_code = 9


class ProtocolError(PhalanxError):
    """Bytes that claim to be a phalanx message are not one: truncated, inconsistent, of
    another protocol version, or carrying a tensor of a dtype the wire does not allow."""

    exit_code = 10


class VersionMismatchError(ProtocolError):
    """The peer speaks another protocol version; the message names both versions."""


class SizeLimitError(ProtocolError):
    """A message or an upload is larger than its configured limit (refused while streaming,
    before the excess is buffered)."""


class AuthError(PhalanxError):
    """The coordinator does not accept the caller's credential (gRPC UNAUTHENTICATED)."""

    exit_code = 11


class PermissionDeniedError(AuthError):
    """An authenticated client asked for what it may not do, such as acting as another."""


class RunMismatchError(PhalanxError):
    """A coordinator answers with another run id than the run this client joined first: a
    client never trains for two runs (a failover keeps the run id; a fresh run does not)."""

    exit_code = 12


class RefusedError(PhalanxError):
    """A well-formed request the coordinator refuses; the message gives the reason. A client
    never resends what was refused (only transport failures are retried)."""


class StaleError(RefusedError):
    """A reply that comes too late, for an older model version or round, or for a task the
    coordinator does not know (any more)."""


class DuplicateError(RefusedError):
    """A submission for a task key already received: submissions are idempotent."""


class BusyError(RefusedError):
    """Over a rate limit or the bound on uploads in flight: the same request may succeed
    later."""


class NotLeaderError(RefusedError):
    """This coordinator is not (or no longer) the leader; ``leader`` is the address of the
    one that is, when known."""

    def __init__(self, message: str, *, leader: str = "") -> None:
        super().__init__(message)
        self.leader = leader


class StaleStateError(PhalanxError):
    """A round was started from a ServerState whose health table a later round has moved on
    (the engine updates the table in place): run each round from the state the last one
    returned, or from a checkpoint."""
