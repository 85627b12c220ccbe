"""phalanx: fault-tolerant federated learning.

The public surface, by name. Everything here is stable to import from ``phalanx``; modules
below it are implementation.
"""

from phalanx.aggregation import Aggregator, FedAvg, build_aggregator
from phalanx.checkpoint import (
    CheckpointInfo,
    CheckpointStore,
    FsspecCheckpointStore,
    LocalCheckpointStore,
    ReplicatedCheckpointStore,
)
from phalanx.config import (
    FaultConfig,
    FaultRule,
    RunConfig,
    ScheduledFault,
    TrainingConfig,
    build_config,
    load_config,
)
from phalanx.core.state import ServerState
from phalanx.engine.engine import Engine
from phalanx.errors import (
    AggregationError,
    CheckpointError,
    ConfigError,
    PhalanxError,
    RuntimeBackendError,
    WorkloadError,
)
from phalanx.runtime.inprocess.user_training import TrainContext, UserTrainFn
from phalanx.simulation import RunResult, Simulation
from phalanx.types import Corruption, FailureKind, FaultKind, RejectReason
from phalanx.workloads import ClientData, Workload, build_workload

__version__ = "0.1.0"

__all__ = [
    "AggregationError",
    "Aggregator",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointStore",
    "ClientData",
    "ConfigError",
    "Corruption",
    "Engine",
    "FailureKind",
    "FaultConfig",
    "FaultKind",
    "FaultRule",
    "FedAvg",
    "FsspecCheckpointStore",
    "LocalCheckpointStore",
    "PhalanxError",
    "RejectReason",
    "ReplicatedCheckpointStore",
    "RunConfig",
    "RunResult",
    "RuntimeBackendError",
    "ScheduledFault",
    "ServerState",
    "Simulation",
    "TrainContext",
    "TrainingConfig",
    "UserTrainFn",
    "Workload",
    "WorkloadError",
    "build_aggregator",
    "build_config",
    "build_workload",
    "load_config",
]
