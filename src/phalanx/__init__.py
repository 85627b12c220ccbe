"""phalanx: fault-tolerant federated learning.

The public surface, by name. Everything here is stable to import from ``phalanx``; modules
below it are implementation.
"""

from phalanx.aggregation import Aggregate, Aggregator, FedAvg, RoundContext, build_aggregator
from phalanx.checkpoint import (
    CheckpointInfo,
    CheckpointStore,
    FsspecCheckpointStore,
    LocalCheckpointStore,
    ReplicatedCheckpointStore,
)
from phalanx.config import (
    AggregationConfig,
    ByzantineConfig,
    FaultConfig,
    FaultRule,
    RunConfig,
    ScheduledFault,
    StepConfig,
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
from phalanx.faults.byzantine import byzantine_clients
from phalanx.runtime.inprocess.user_training import TrainContext, UserTrainFn
from phalanx.simulation import RunResult, Simulation
from phalanx.types import Corruption, FailureKind, FaultKind, RejectReason
from phalanx.workloads import ClientData, Workload, build_workload

__version__ = "0.1.0"

__all__ = [
    "Aggregate",
    "AggregationConfig",
    "AggregationError",
    "Aggregator",
    "ByzantineConfig",
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
    "RoundContext",
    "RunConfig",
    "RunResult",
    "RuntimeBackendError",
    "ScheduledFault",
    "ServerState",
    "Simulation",
    "StepConfig",
    "TrainContext",
    "TrainingConfig",
    "UserTrainFn",
    "Workload",
    "WorkloadError",
    "build_aggregator",
    "build_config",
    "build_workload",
    "byzantine_clients",
    "load_config",
]
