"""phalanx: fault-tolerant federated learning.

The public surface, by name. Everything here is stable to import from ``phalanx``; modules
below it are implementation. Names load on first use (PEP 562), so importing a part of
phalanx (``phalanx.client`` on a client node) does not import the rest: the engine, the
aggregators, plots and their dependencies stay out of a process that never uses them.
"""

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

if _TYPE_CHECKING:
    from phalanx.aggregation import Aggregate, Aggregator, FedAvg, RoundContext, build_aggregator
    from phalanx.checkpoint import (
        CheckpointInfo,
        CheckpointStore,
        FsspecCheckpointStore,
        LocalCheckpointStore,
        ReplicatedCheckpointStore,
    )
    from phalanx.client import TrainContext, UserTrainFn
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
        ProtocolError,
        RuntimeBackendError,
        WorkloadError,
    )
    from phalanx.faults.attacks import (
        AggregationView,
        Attack,
        ColludingAttack,
        ModelAttack,
        RoundView,
    )
    from phalanx.faults.byzantine import byzantine_clients, register_attack, unregister_attack
    from phalanx.simulation import RunResult, Simulation
    from phalanx.types import Corruption, FailureKind, FaultKind, RejectReason
    from phalanx.workloads import ClientData, Workload, build_workload

__version__ = "0.1.0"

_HOMES = {
    "phalanx.aggregation": ("Aggregate", "Aggregator", "FedAvg", "RoundContext",
                            "build_aggregator"),
    "phalanx.checkpoint": ("CheckpointInfo", "CheckpointStore", "FsspecCheckpointStore",
                           "LocalCheckpointStore", "ReplicatedCheckpointStore"),
    "phalanx.client": ("TrainContext", "UserTrainFn"),
    "phalanx.config": ("AggregationConfig", "ByzantineConfig", "FaultConfig", "FaultRule",
                       "RunConfig", "ScheduledFault", "StepConfig", "TrainingConfig",
                       "build_config", "load_config"),
    "phalanx.core.state": ("ServerState",),
    "phalanx.engine.engine": ("Engine",),
    "phalanx.errors": ("AggregationError", "CheckpointError", "ConfigError", "PhalanxError",
                       "ProtocolError", "RuntimeBackendError", "WorkloadError"),
    "phalanx.faults.attacks": ("AggregationView", "Attack", "ColludingAttack", "ModelAttack",
                               "RoundView"),
    "phalanx.faults.byzantine": ("byzantine_clients", "register_attack", "unregister_attack"),
    "phalanx.simulation": ("RunResult", "Simulation"),
    "phalanx.types": ("Corruption", "FailureKind", "FaultKind", "RejectReason"),
    "phalanx.workloads": ("ClientData", "Workload", "build_workload"),
}  # fmt: skip
_HOME = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "Aggregate",
    "AggregationConfig",
    "AggregationError",
    "AggregationView",
    "Aggregator",
    "Attack",
    "ByzantineConfig",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointStore",
    "ClientData",
    "ColludingAttack",
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
    "ModelAttack",
    "PhalanxError",
    "ProtocolError",
    "RejectReason",
    "ReplicatedCheckpointStore",
    "RoundContext",
    "RoundView",
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
    "register_attack",
    "unregister_attack",
]


def __getattr__(name: str) -> _Any:
    """Import a public name's module on first use, then keep the name here."""
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'phalanx' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
