"""One pydantic model tree for a run, loaded from TOML with ``a.b=c`` overrides.

Every model forbids unknown keys, so a typo is an error naming the key, not a silent default.
Durations are seconds on the engine's clock (virtual in simulation, wall in deployment).
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from phalanx.errors import ConfigError
from phalanx.types import Corruption, FailureKind, FaultKind


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


# --- workloads ---------------------------------------------------------------------------


class SeedWorkload(Strict):
    """The seed tutorial's task: class-dependent feature shift, MLP 32-64-10."""

    name: Literal["seed"] = "seed"
    num_clients: int = Field(20, ge=1)
    samples_per_client: int = Field(200, ge=1)
    test_samples: int = Field(300, ge=1)
    features: int = Field(32, ge=1)
    classes: int = Field(10, ge=2)
    hidden: int = Field(64, ge=1)
    shift: float = 2.0


class SyntheticWorkload(Strict):
    """FedProx's Synthetic(alpha, beta): per-client softmax models and feature distributions."""

    name: Literal["synthetic"] = "synthetic"
    num_clients: int = Field(30, ge=1)
    alpha: float = Field(1.0, ge=0)
    beta: float = Field(1.0, ge=0)
    features: int = Field(60, ge=1)
    classes: int = Field(10, ge=2)
    hidden: int = Field(0, ge=0)  # 0: multinomial logistic regression, as in the paper
    min_samples: int = Field(50, ge=1)
    max_samples: int = Field(1000, ge=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)


class DigitsWorkload(Strict):
    """scikit-learn's bundled 8x8 digits, split across clients by Dirichlet(alpha) labels."""

    name: Literal["digits"] = "digits"
    num_clients: int = Field(20, ge=1)
    dirichlet_alpha: float | None = Field(0.5, gt=0)  # None: IID split
    hidden: int = Field(64, ge=0)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    min_samples: int = Field(10, ge=1)


class FashionMnistWorkload(Strict):
    """Fashion-MNIST (28x28 greyscale, 10 classes) read from the IDX files that Debian's
    ``dataset-fashion-mnist`` installs; never downloaded. ``train_examples`` and
    ``test_examples`` take a stratified subset, for runs that must stay short."""

    name: Literal["fashion_mnist"] = "fashion_mnist"
    num_clients: int = Field(20, ge=1)
    dirichlet_alpha: float | None = Field(0.5, gt=0)  # None: IID split
    hidden: int = Field(128, ge=0)
    min_samples: int = Field(10, ge=1)
    train_examples: int | None = Field(None, ge=1)  # None: all 60,000
    test_examples: int | None = Field(None, ge=1)  # None: all 10,000
    path: str = "/usr/share/datasets/fashion-mnist"


class CustomWorkload(Strict):
    """The user's own model and per-client data, given to ``Simulation`` directly."""

    name: Literal["custom"] = "custom"
    num_clients: int = Field(ge=1)


WorkloadConfig = Annotated[
    SeedWorkload | SyntheticWorkload | DigitsWorkload | FashionMnistWorkload | CustomWorkload,
    Field(discriminator="name"),
]


# --- client training ---------------------------------------------------------------------


class TrainingConfig(Strict):
    local_epochs: int = Field(3, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.01, gt=0)


# --- engine policies -----------------------------------------------------------------------


class SelectionConfig(Strict):
    clients_per_round: int = Field(10, ge=1)
    over_selection: float = Field(1.3, ge=1.0)
    # A round opening with fewer live members than its quorum waits this long for more to
    # join (a coordinator started before its clients); the round record says how long.
    member_wait_s: float = Field(60.0, ge=0)

    @property
    def dispatch_count(self) -> int:
        return math.ceil(self.clients_per_round * self.over_selection - 1e-9)


class DeadlineConfig(Strict):
    """The task deadline bounds one attempt; the round deadline bounds everything, and wins
    when the two disagree (a task never outlives its round)."""

    task_s: float = Field(60.0, gt=0)
    round_s: float = Field(180.0, gt=0)


class RetryConfig(Strict):
    max_attempts: int = Field(3, ge=1)
    base_delay_s: float = Field(1.0, ge=0)
    max_delay_s: float = Field(30.0, ge=0)
    retry_on: tuple[FailureKind, ...] = (FailureKind.CRASH, FailureKind.DROP)

    @model_validator(mode="after")
    def _no_retry_of_rejections(self) -> RetryConfig:
        if FailureKind.REJECTED in self.retry_on:
            raise ValueError("retry_on may not include 'rejected': a refused update is final")
        return self


class ReplacementConfig(Strict):
    enabled: bool = True
    min_remaining_s: float = Field(5.0, ge=0)  # no replacement this close to the deadline


class QuorumConfig(Strict):
    min_updates: int = Field(5, ge=1)
    min_fraction: float = Field(0.0, ge=0, le=1)  # of clients_per_round

    def required(self, target: int) -> int:
        return max(self.min_updates, math.ceil(self.min_fraction * target - 1e-9))


class HealthConfig(Strict):
    """Score is an exponential average of outcomes (1 success, 0 failure)."""

    decay: float = Field(0.6, ge=0, lt=1)  # weight of the old score
    sideline_below: float = Field(0.35, ge=0, le=1)
    cooldown_rounds: int = Field(3, ge=1)
    max_cooldown_rounds: int = Field(24, ge=1)
    readmit_score: float = Field(0.6, ge=0, le=1)
    max_probes_per_round: int = Field(2, ge=0)


class ValidationConfig(Strict):
    max_norm: float = Field(1e4, gt=0)  # absolute bound on ||update - global||
    max_relative_norm: float | None = Field(3.0, gt=1)  # x the round's median norm
    relative_min_updates: int = Field(3, ge=1)  # fewer accepted: relative check skipped
    # Streaming aggregation folds updates in as they arrive; the first few are held back
    # to set the median norm that later arrivals are checked against.
    reference_updates: int = Field(5, ge=0)  # 0: never hold back (first round: absolute bound only)
    max_update_bytes: int = Field(256 * 2**20, gt=0)


class PartialWorkConfig(Strict):
    """FedProx-style: a straggler submits the steps it finished before the deadline."""

    enabled: bool = False
    min_fraction: float = Field(0.25, gt=0, le=1)


# A parameter of a named aggregator, pre-aggregation step or attack. Its registry checks
# names and values, so an unknown one is an error that lists the valid ones.
ParamValue = int | float | str | bool


class StepConfig(Strict):
    """One pre-aggregation step (clipping, nnm, bucketing), by name, with its parameters."""

    name: str
    params: dict[str, ParamValue] = Field(default_factory=dict)


class AggregationConfig(Strict):
    """The rule ``name`` with its ``params``, behind the ``pre`` steps, applied in order.
    ``f`` is the number of Byzantine updates per round the robust parts must tolerate; each
    checks its own inequality on the round's actual n and discards the round (not the run)
    when it does not hold. With ``health_feedback``, a client whose update the aggregator
    flags loses health as if it had failed, so a client flagged round after round is
    sidelined, and earns its way back on probation like any other.

    ``memory_budget_bytes`` caps the update bytes a round may hold: a streaming aggregator
    (FedAvg) holds a few updates whatever the number of clients; one that needs all updates
    at once holds n x d float32 and a round that would exceed the budget is refused."""

    name: str = "fedavg"
    f: int = Field(0, ge=0)
    params: dict[str, ParamValue] = Field(default_factory=dict)
    pre: tuple[StepConfig, ...] = ()
    # The health monitor learns from the aggregator: a client whose update it flags as
    # suspicious (see each rule's flag parameters) counts that round as a failure.
    health_feedback: bool = False
    memory_budget_bytes: int = Field(4 * 2**30, gt=0)


# --- simulation ----------------------------------------------------------------------------


class LatencyConfig(Strict):
    """Virtual time of one client: compute = steps x step_s x speed, plus network latency.
    Device speeds are log-normal across clients; stragglers multiply by straggle_factor."""

    step_s: float = Field(0.05, gt=0)
    speed_sigma: float = Field(0.3, ge=0)
    network_s: float = Field(0.5, ge=0)
    network_jitter_s: float = Field(0.2, ge=0)
    straggle_factor: float = Field(20.0, ge=1)
    crash_detect_s: float = Field(1.0, ge=0)  # how long a lost connection takes to notice


class FaultRule(Strict):
    """Faults at a rate for a set of clients; ``kinds`` are drawn with equal odds."""

    clients: tuple[int, ...] | None = None  # None: every client
    rate: float = Field(ge=0, le=1)
    kinds: tuple[FaultKind, ...] = (FaultKind.CRASH, FaultKind.HANG, FaultKind.CORRUPT)


class ScheduledFault(Strict):
    round: int = Field(ge=0)
    client: int = Field(ge=0)
    kind: FaultKind
    attempt: int | None = None  # None: every attempt of that round


class ByzantineConfig(Strict):
    """Byzantine clients and their attack. Who they are is fixed for the whole run: the
    ``clients`` listed, else round(fraction x num_clients) clients drawn from the seed.
    They collude, and an attack that needs it sees the round's honest updates. Independent
    of ``faults.enabled``, which switches the random fault rules and schedule."""

    fraction: float = Field(0.0, ge=0, lt=1)
    clients: tuple[int, ...] | None = None
    attack: str = "sign_flip"
    params: dict[str, ParamValue] = Field(default_factory=dict)


class FaultConfig(Strict):
    """A fault plan as data. Rules fire per (round, client, attempt) from a stream of their
    own; scheduled faults fire exactly; a scheduled fault takes precedence over rules."""

    enabled: bool = True
    rules: tuple[FaultRule, ...] = ()
    schedule: tuple[ScheduledFault, ...] = ()
    corruptions: tuple[Corruption, ...] = (Corruption.NOISE,)
    noise_std: float = Field(1.0, gt=0)
    scale: float = -10.0
    byzantine: ByzantineConfig = Field(default_factory=ByzantineConfig)


class SimulationConfig(Strict):
    batched: bool = True  # train a round's clients together when they share a model
    workers: int = Field(2, ge=1)  # processes for per-client training of user code
    hang_guard_s: float = Field(120.0, gt=0)  # real seconds before a hung worker is killed
    threads_per_worker: int = Field(1, ge=1)


class CheckpointConfig(Strict):
    """Checkpoints go to the run's own ``checkpoints/`` directory and, when ``stores`` names
    more locations (plain paths, or fsspec URLs such as ``s3://bucket/run``), to each of
    them too; a save succeeds when ``write_quorum`` of all these stores acknowledge it (None:
    every one). Retention keeps the newest ``keep`` plus every round that is a multiple of
    ``keep_every``. Relative paths are taken from the current directory."""

    every: int = Field(10, ge=0)  # 0 disables
    keep: int = Field(3, ge=1)
    keep_every: int | None = Field(None, ge=1)
    stores: tuple[str, ...] = ()
    write_quorum: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _quorum_reachable(self) -> CheckpointConfig:
        total = 1 + len(self.stores)  # the run's own directory counts
        if self.write_quorum is not None and self.write_quorum > total:
            raise ValueError(
                f"checkpoint.write_quorum ({self.write_quorum}) exceeds the number of stores "
                f"({total}: the run's checkpoints/ directory and {len(self.stores)} in "
                "checkpoint.stores): no save could ever succeed"
            )
        if len(set(self.stores)) != len(self.stores) or "" in self.stores:
            raise ValueError(f"checkpoint.stores must be distinct, non-empty; got {self.stores}")
        return self


class RunConfig(Strict):
    name: str = "seed"
    seed: int = 42
    rounds: int = Field(50, ge=1)
    eval_every: int = Field(1, ge=1)
    workload: WorkloadConfig = Field(default_factory=SeedWorkload)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    deadlines: DeadlineConfig = Field(default_factory=DeadlineConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    replacement: ReplacementConfig = Field(default_factory=ReplacementConfig)
    quorum: QuorumConfig = Field(default_factory=QuorumConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    partial_work: PartialWorkConfig = Field(default_factory=PartialWorkConfig)
    aggregation: AggregationConfig = Field(default_factory=AggregationConfig)
    latency: LatencyConfig = Field(default_factory=LatencyConfig)
    faults: FaultConfig = Field(default_factory=FaultConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)

    def for_clients(self, num_clients: int) -> RunConfig:
        """This configuration with the user's own clients in place of a built-in workload."""
        tree = self.model_dump(mode="json")
        tree["workload"] = {"name": "custom", "num_clients": num_clients}
        try:
            return RunConfig.model_validate(tree)
        except ValidationError as error:
            raise ConfigError(_describe(error)) from None

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if self.quorum.min_updates > self.selection.clients_per_round:
            raise ValueError(
                f"quorum.min_updates ({self.quorum.min_updates}) exceeds "
                f"selection.clients_per_round ({self.selection.clients_per_round}): "
                "no round could ever commit"
            )
        if self.selection.clients_per_round > self.workload.num_clients:
            raise ValueError(
                f"selection.clients_per_round ({self.selection.clients_per_round}) exceeds "
                f"workload.num_clients ({self.workload.num_clients})"
            )
        return self


# --- loading -------------------------------------------------------------------------------


def _parse_value(text: str) -> Any:
    """An override's value is read as TOML if it parses, else as a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    key, sep, value = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {assignment!r} is not of the form key.path=value")
    parts = key.strip().split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {assignment!r}: {part!r} is not a table")
        node = child
    node[parts[-1]] = _parse_value(value.strip())


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(root)"
        lines.append(f"  {where}: {item['msg']}")
    return "invalid configuration:\n" + "\n".join(lines)


def build_config(tree: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    tree = {k: (dict(v) if isinstance(v, dict) else v) for k, v in tree.items()}
    for assignment in overrides:
        apply_override(tree, assignment)
    workload = tree.get("workload")
    if isinstance(workload, dict) and "name" not in workload:
        tree["workload"] = {"name": "seed", **workload}  # the default workload, as in RunConfig
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None


def load_config(path: Path | None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    tree: dict[str, Any] = {}
    if path is not None:
        try:
            tree = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"scenario file not found: {path}") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: not valid TOML: {error}") from None
    return build_config(tree, overrides)
