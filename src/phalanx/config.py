"""One pydantic model tree for a run, loaded from TOML with ``a.b=c`` overrides.

Every model forbids unknown keys, so a typo is an error naming the key, not a silent default.
Durations are seconds on the engine's clock (virtual in simulation, wall in deployment).
"""

from __future__ import annotations

import copy
import json
import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from phalanx.errors import ConfigError
from phalanx.types import Corruption, FailureKind, FaultKind


class Strict(BaseModel):
    """The one strict base model: every config section, and every named thing's parameters
    (``phalanx.core.named.Params``). Unknown keys are refused, instances are frozen, and the
    schema is built on first use rather than at import (start-up time)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


# --- workloads ---------------------------------------------------------------------------


class SeedWorkload(Strict):
    """The seed tutorial's task: class-dependent feature shift, MLP 32-64-10."""

    name: Literal["seed"] = Field(
        "seed", description="workload kind (this table: the seed tutorial's synthetic task)"
    )
    num_clients: int = Field(20, ge=1, description="clients in the population")
    samples_per_client: int = Field(200, ge=1, description="training examples generated per client")
    test_samples: int = Field(300, ge=1, description="examples in the server's test set")
    features: int = Field(32, ge=1, description="input features per example")
    classes: int = Field(10, ge=2, description="number of classes")
    hidden: int = Field(64, ge=1, description="hidden units of the MLP")
    shift: float = Field(
        2.0,
        description="shift of feature y % features in class-y examples (larger: easier)",
    )


class SyntheticWorkload(Strict):
    """FedProx's Synthetic(alpha, beta): per-client softmax models and feature distributions."""

    name: Literal["synthetic"] = Field(
        "synthetic", description="workload kind (this table: FedProx's Synthetic(alpha, beta))"
    )
    num_clients: int = Field(30, ge=1, description="clients in the population")
    alpha: float = Field(
        1.0, ge=0, description="how much clients' models differ (0: one shared model)"
    )
    beta: float = Field(1.0, ge=0, description="how much clients' feature distributions differ")
    features: int = Field(60, ge=1, description="input features per example")
    classes: int = Field(10, ge=2, description="number of classes")
    hidden: int = Field(
        0, ge=0, description="hidden units; 0: multinomial logistic regression, as in the paper"
    )
    min_samples: int = Field(50, ge=1, description="fewest examples a client holds")
    max_samples: int = Field(1000, ge=1, description="most examples a client holds")
    test_fraction: float = Field(
        0.2, gt=0, lt=1, description="share of each client's examples held out for the test set"
    )


class DigitsWorkload(Strict):
    """scikit-learn's bundled 8x8 digits, split across clients by Dirichlet(alpha) labels."""

    name: Literal["digits"] = Field(
        "digits", description="workload kind (this table: scikit-learn's 8x8 digits)"
    )
    num_clients: int = Field(20, ge=1, description="clients in the population")
    dirichlet_alpha: float | None = Field(
        0.5,
        gt=0,
        description="label skew of the split, Dirichlet(alpha) per class; null: IID split",
    )
    hidden: int = Field(64, ge=0, description="hidden units of the MLP; 0: logistic regression")
    test_fraction: float = Field(
        0.2, gt=0, lt=1, description="share of the images held out for the test set"
    )
    min_samples: int = Field(
        10,
        ge=1,
        description="fewest images a client holds (the split is redrawn a bounded number of times)",
    )


class FashionMnistWorkload(Strict):
    """Fashion-MNIST (28x28 greyscale, 10 classes) read from the IDX files that Debian's
    ``dataset-fashion-mnist`` installs; never downloaded. ``train_examples`` and
    ``test_examples`` take a stratified subset, for runs that must stay short."""

    name: Literal["fashion_mnist"] = Field(
        "fashion_mnist",
        description="workload kind (this table: Fashion-MNIST from Debian's IDX files)",
    )
    num_clients: int = Field(20, ge=1, description="clients in the population")
    dirichlet_alpha: float | None = Field(
        0.5,
        gt=0,
        description="label skew of the split, Dirichlet(alpha) per class; null: IID split",
    )
    hidden: int = Field(128, ge=0, description="hidden units of the MLP; 0: logistic regression")
    min_samples: int = Field(
        10,
        ge=1,
        description="fewest images a client holds (the split is redrawn a bounded number of times)",
    )
    train_examples: int | None = Field(
        None, ge=1, description="stratified subset of the training images; null: all 60,000"
    )
    test_examples: int | None = Field(
        None, ge=1, description="stratified subset of the test images; null: all 10,000"
    )
    path: str = Field(
        "/usr/share/datasets/fashion-mnist", description="directory holding the IDX files"
    )


class CustomWorkload(Strict):
    """The user's own model and per-client data, given to ``Simulation`` directly."""

    name: Literal["custom"] = Field(
        "custom",
        description="workload kind (this table: the user's own model and data, Python API only)",
    )
    num_clients: int = Field(ge=1, description="clients given to Simulation")


WorkloadConfig = Annotated[
    SeedWorkload | SyntheticWorkload | DigitsWorkload | FashionMnistWorkload | CustomWorkload,
    Field(discriminator="name"),
]


# --- client training ---------------------------------------------------------------------


class TrainingConfig(Strict):
    local_epochs: int = Field(3, ge=1, description="passes over its data a client makes per round")
    batch_size: int = Field(32, ge=1, description="examples per local SGD step")
    lr: float = Field(0.01, gt=0, description="local SGD learning rate")


# --- engine policies -----------------------------------------------------------------------


class SelectionConfig(Strict):
    clients_per_round: int = Field(
        10, ge=1, description="updates a round aims to aggregate (the target)"
    )
    over_selection: float = Field(
        1.3,
        ge=1.0,
        description="clients asked = ceil(target x this); extras cancelled once the target is met",
    )
    member_wait_s: float = Field(
        60.0,
        ge=0,
        description="a round opening with fewer live members than its quorum waits this long "
        "for more to join (a coordinator started before its clients)",
    )

    @property
    def dispatch_count(self) -> int:
        return math.ceil(self.clients_per_round * self.over_selection - 1e-9)


class DeadlineConfig(Strict):
    """The task deadline bounds one attempt; the round deadline bounds everything, and wins
    when the two disagree (a task never outlives its round)."""

    task_s: float = Field(
        60.0, gt=0, description="seconds one attempt may take before it counts as a timeout"
    )
    round_s: float = Field(
        180.0, gt=0, description="seconds the whole round may take; wins over task_s"
    )


class RetryConfig(Strict):
    max_attempts: int = Field(
        3, ge=1, description="attempts per client and round, the first included"
    )
    base_delay_s: float = Field(
        1.0, ge=0, description="backoff before the first retry (doubles each time, full jitter)"
    )
    max_delay_s: float = Field(30.0, ge=0, description="cap on one backoff")
    retry_on: tuple[FailureKind, ...] = Field(
        (FailureKind.CRASH, FailureKind.DROP),
        description="failure kinds that are retried (crash, timeout, drop; never rejected)",
    )

    @model_validator(mode="after")
    def _no_retry_of_rejections(self) -> RetryConfig:
        if FailureKind.REJECTED in self.retry_on:
            raise ValueError("retry_on may not include 'rejected': a refused update is final")
        return self


class ReplacementConfig(Strict):
    enabled: bool = Field(True, description="replace a client lost for good by a fresh healthy one")
    min_remaining_s: float = Field(
        5.0, ge=0, description="no replacement when fewer seconds than this remain in the round"
    )


class QuorumConfig(Strict):
    min_updates: int = Field(5, ge=1, description="fewest accepted updates a round needs to commit")
    min_fraction: float = Field(
        0.0, ge=0, le=1, description="also at least this share of clients_per_round"
    )

    def required(self, target: int) -> int:
        return max(self.min_updates, math.ceil(self.min_fraction * target - 1e-9))


class HealthConfig(Strict):
    """Score is an exponential average of outcomes (1 success, 0 failure)."""

    decay: float = Field(
        0.6,
        ge=0,
        lt=1,
        description="weight of the old score in the exponential average of outcomes",
    )
    sideline_below: float = Field(
        0.35, ge=0, le=1, description="a client whose score falls below this is sidelined"
    )
    cooldown_rounds: int = Field(
        3, ge=1, description="rounds a sidelined client waits before its first probe"
    )
    max_cooldown_rounds: int = Field(
        24, ge=1, description="cap on the cool-down, which doubles after each failed probe"
    )
    readmit_score: float = Field(
        0.6, ge=0, le=1, description="least score a client has once a probe succeeds"
    )
    max_probes_per_round: int = Field(
        2, ge=0, description="sidelined clients probed per round at most"
    )


class ValidationConfig(Strict):
    max_norm: float = Field(
        1e4, gt=0, description="absolute bound on the norm of an update (update - global model)"
    )
    max_relative_norm: float | None = Field(
        3.0,
        gt=1,
        description="bound as a multiple of the round's median update norm; null: none",
    )
    relative_min_updates: int = Field(
        3, ge=1, description="fewer accepted updates than this: the relative check is skipped"
    )
    # Streaming aggregation folds updates in as they arrive; the first few are held back
    # to set the median norm that later arrivals are checked against.
    reference_updates: int = Field(
        5, ge=0, description="updates held back in the first round to set the median norm; 0: none"
    )
    max_update_bytes: int = Field(
        256 * 2**20, gt=0, description="largest update payload accepted, in bytes"
    )


class PartialWorkConfig(Strict):
    """FedProx-style: a straggler submits the steps it finished before the deadline."""

    enabled: bool = Field(
        False, description="a straggler submits the local steps it finished by the deadline"
    )
    min_fraction: float = Field(
        0.25, gt=0, le=1, description="least share of the local work a partial update must hold"
    )


# A parameter of a named aggregator, pre-aggregation step or attack. Its registry checks
# names and values, so an unknown one is an error that lists the valid ones.
ParamValue = int | float | str | bool


class StepConfig(Strict):
    """One pre-aggregation step (clipping, nnm, bucketing), by name, with its parameters."""

    name: str = Field(description="step name (phalanx list aggregators)")
    params: dict[str, ParamValue] = Field(
        default_factory=dict, description="the step's parameters (phalanx list aggregators)"
    )


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

    name: str = Field("fedavg", description="the aggregation rule (phalanx list aggregators)")
    f: int = Field(
        0, ge=0, description="Byzantine updates per round the robust parts must tolerate"
    )
    params: dict[str, ParamValue] = Field(
        default_factory=dict, description="the rule's parameters (phalanx list aggregators)"
    )
    pre: tuple[StepConfig, ...] = Field(
        (),
        description="pre-aggregation steps applied in order before the rule, as [{name, params}]",
    )
    # The health monitor learns from the aggregator: a client whose update it flags as
    # suspicious (see each rule's flag parameters) counts that round as a failure.
    health_feedback: bool = Field(
        False,
        description="a client whose update the aggregator flags counts that round as a failure",
    )
    memory_budget_bytes: int = Field(
        4 * 2**30,
        gt=0,
        description="cap on the update bytes a round may hold; a larger stack is refused",
    )


# --- simulation ----------------------------------------------------------------------------


class LatencyConfig(Strict):
    """Virtual time of one client: compute = steps x step_s x speed, plus network latency.
    Device speeds are log-normal across clients; stragglers multiply by straggle_factor."""

    step_s: float = Field(
        0.05, gt=0, description="virtual seconds per local SGD step on a device of speed 1"
    )
    speed_sigma: float = Field(
        0.3, ge=0, description="sigma of the log-normal device speeds across clients"
    )
    network_s: float = Field(0.5, ge=0, description="virtual network latency per transfer")
    network_jitter_s: float = Field(0.2, ge=0, description="random extra latency, up to this")
    straggle_factor: float = Field(
        20.0, ge=1, description="a straggling attempt is this many times slower"
    )
    crash_detect_s: float = Field(
        1.0, ge=0, description="virtual seconds until a lost connection is noticed"
    )


class FaultRule(Strict):
    """Faults at a rate for a set of clients; ``kinds`` are drawn with equal odds."""

    clients: tuple[int, ...] | None = Field(
        None, description="client ids the rule applies to; null: every client"
    )
    rate: float = Field(
        ge=0, le=1, description="probability that an attempt of one of these clients faults"
    )
    kinds: tuple[FaultKind, ...] = Field(
        (FaultKind.CRASH, FaultKind.HANG, FaultKind.CORRUPT),
        description="fault kinds drawn with equal odds (crash, hang, straggle, drop, corrupt)",
    )


class ScheduledFault(Strict):
    round: int = Field(ge=0, description="round the fault fires in")
    client: int = Field(ge=0, description="client it fires on")
    kind: FaultKind = Field(description="fault kind (crash, hang, straggle, drop, corrupt)")
    attempt: int | None = Field(
        None, description="attempt it fires on; null: every attempt of that round"
    )


class ByzantineConfig(Strict):
    """Byzantine clients and their attack. Who they are is fixed for the whole run: the
    ``clients`` listed, else round(fraction x num_clients) clients drawn from the seed.
    They collude, and an attack that needs it sees the round's honest updates. Independent
    of ``faults.enabled``, which switches the random fault rules and schedule."""

    fraction: float = Field(
        0.0, ge=0, lt=1, description="share of the clients that are Byzantine, drawn from the seed"
    )
    clients: tuple[int, ...] | None = Field(
        None, description="the Byzantine client ids (instead of fraction); null: use fraction"
    )
    attack: str = Field("sign_flip", description="the attack they run (phalanx list attacks)")
    params: dict[str, ParamValue] = Field(
        default_factory=dict, description="the attack's parameters (phalanx list attacks)"
    )


class FaultConfig(Strict):
    """A fault plan as data. Rules fire per (round, client, attempt) from a stream of their
    own; scheduled faults fire exactly; a scheduled fault takes precedence over rules."""

    enabled: bool = Field(
        True, description="apply rules and schedule (Byzantine clients act regardless)"
    )
    rules: tuple[FaultRule, ...] = Field(
        (), description="random faults at a rate, as [{clients, rate, kinds}]"
    )
    schedule: tuple[ScheduledFault, ...] = Field(
        (), description="exact faults, as [{round, client, kind, attempt}]"
    )
    corruptions: tuple[Corruption, ...] = Field(
        (Corruption.NOISE,),
        description="how a corrupt fault damages an update, drawn with equal odds",
    )
    noise_std: float = Field(1.0, gt=0, description="std of the noise corruption's random weights")
    scale: float = Field(-10.0, description="factor of the scale corruption")
    byzantine: ByzantineConfig = Field(default_factory=ByzantineConfig)


class SimulationConfig(Strict):
    batched: bool = Field(
        True, description="train a round's clients together when they share a model"
    )
    workers: int = Field(
        2,
        ge=0,
        description="worker processes for per-client training of user code (train=); 0 trains"
        " in this process (one core: no hand-off, but no crash isolation; a SIGALRM hang guard)",
    )
    hang_guard_s: float = Field(
        120.0, gt=0, description="real seconds before a hung worker is killed"
    )
    threads_per_worker: int = Field(1, ge=1, description="torch threads in each worker process")
    max_batch_bytes: int = Field(
        256 * 2**20,
        ge=1,
        description="memory for one batch of clients trained together by the built-in trainer"
        " (stacked parameters, gradients, results, activations, data): bounds the batch's"
        " width, so trained updates waiting for delivery stay few; at least one client",
    )


VOLATILE_PROTOCOLS = frozenset({"memory"})
"""fsspec protocols whose files die with the process: never a durable checkpoint store."""


def is_volatile_store(location: str) -> bool:
    """A checkpoint store location (a path or fsspec URL) that is not durable."""
    protocol, sep, _ = location.partition("://")
    return bool(sep) and protocol in VOLATILE_PROTOCOLS


class CheckpointConfig(Strict):
    """Checkpoints go to the run's own ``checkpoints/`` directory and, when ``stores`` names
    more locations (plain paths, or fsspec URLs such as ``s3://bucket/run``), to each of
    them too; a save succeeds when ``write_quorum`` of all these stores acknowledge it (None:
    every one). Only durable stores count: ``memory://`` may hold a copy but never counts
    toward the quorum. Retention keeps the newest ``keep`` plus every round that is a
    multiple of ``keep_every``. Relative paths are taken from the current directory until
    ``resolved`` makes them absolute, which a new run does once, before writing config.json."""

    every: int = Field(10, ge=0, description="rounds between checkpoints; 0: none")
    keep: int = Field(3, ge=1, description="newest checkpoints kept")
    keep_every: int | None = Field(
        None, ge=1, description="also keep every round that is a multiple of this; null: none more"
    )
    stores: tuple[str, ...] = Field(
        (), description="replica stores besides the run's checkpoints/: paths or fsspec URLs"
    )
    write_quorum: int | None = Field(
        None, ge=1, description="stores that must acknowledge a save; null: all"
    )
    timeout_s: float = Field(
        300.0,
        gt=0,
        description="seconds one checkpoint store call (a save, the resume lookup) may take; "
        "past it the run stops with a StorageError naming the store (exit 9)",
    )

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
        volatile = [store for store in self.stores if is_volatile_store(store)]
        quorum = self.write_quorum or total
        if quorum > total - len(volatile):
            raise ValueError(
                f"checkpoint.write_quorum ({self.write_quorum or 'None: every store'}) cannot be "
                f"met: {', '.join(volatile)} is not durable (its checkpoints die with the "
                f"process) and never counts, leaving {total - len(volatile)} durable stores; "
                "set write_quorum lower or replace the volatile store"
            )
        return self

    def resolved(self, base: Path) -> CheckpointConfig:
        """This configuration with every relative store path made absolute against ``base``
        (``~`` expanded; URLs other than relative ``file://`` ones untouched), so that a
        resume from another working directory writes to the same replicas."""
        return self.model_copy(update={"stores": tuple(_absolute(s, base) for s in self.stores)})


def _absolute(location: str, base: Path) -> str:
    protocol, sep, path = location.partition("://")
    if sep and protocol != "file":
        return location
    local = Path(path if sep else location).expanduser()
    absolute = str(local if local.is_absolute() else (base / local).resolve())
    return f"file://{absolute}" if sep else absolute


class RunConfig(Strict):
    name: str = Field("seed", description="the run's name (default output directory runs/NAME)")
    seed: int = Field(
        42, description="seed of every random choice (selection, faults, attacks, data)"
    )
    rounds: int = Field(50, ge=1, description="rounds to run")
    eval_every: int = Field(
        1, ge=1, description="evaluate the global model after every this many rounds"
    )
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

NULL_WORDS = frozenset({"null", "none"})  # TOML has no null; an override spells it so


def _parse_value(text: str) -> Any:
    """An override's value: ``null``/``none`` (any case) is None, else TOML if it parses
    (numbers, booleans, arrays, inline tables), else the text as a plain string. A quoted
    ``"null"`` is the string."""
    if text.lower() in NULL_WORDS:
        return None
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Set ``key.path=value`` in ``tree``. A table's key given an inline table (``--set
    'aggregation={name="fedavg"}'``) replaces the whole table, dropping the keys the
    scenario set in it: the way to switch a rule, attack or workload whose parameters
    differ."""
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


def _describe(error: ValidationError, nulled: frozenset[tuple[str, ...]] = frozenset()) -> str:
    lines = []
    for item in error.errors():
        loc = tuple(str(p) for p in item["loc"])
        key = next((k for k in nulled if _same_key(loc, k)), None)
        if key is not None and item["input"] is None:
            lines.append(f"  {'.'.join(key)}: is not optional; it cannot be set to null")
            continue
        lines.append(f"  {'.'.join(loc) or '(root)'}: {item['msg']}")
    return "invalid configuration:\n" + "\n".join(dict.fromkeys(lines))


def _same_key(loc: tuple[str, ...], key: tuple[str, ...]) -> bool:
    """Whether a validation error's location is ``key``; a discriminated union (workload)
    inserts the variant's tag after the table's name."""
    return loc == key or (len(loc) == len(key) + 1 and loc[:1] == key[:1] and loc[2:] == key[1:])


def build_config(tree: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """``tree`` (a parsed scenario, untouched) with ``overrides`` applied, validated."""
    tree = copy.deepcopy(tree)
    for assignment in overrides:
        apply_override(tree, assignment)
    nulled = frozenset(
        tuple(a.partition("=")[0].strip().split("."))
        for a in overrides
        if a.partition("=")[2].strip().lower() in NULL_WORDS
    )
    workload = tree.get("workload")
    if isinstance(workload, dict) and "name" not in workload:
        tree["workload"] = {"name": "seed", **workload}  # the default workload, as in RunConfig
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as error:
        raise ConfigError(_describe(error, nulled)) from None


def _json_tree(path: Path) -> dict[str, Any]:
    try:
        tree = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"scenario file not found: {path}") from None
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path}: not a readable JSON configuration: {error}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: a configuration is a JSON object")
    return tree


def load_config(path: Path | None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    tree: dict[str, Any] = {}
    if path is not None and path.suffix == ".json":  # a run directory's config.json
        return build_config(_json_tree(path), overrides)
    if path is not None:
        try:
            tree = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"scenario file not found: {path}") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: not valid TOML: {error}") from None
    return build_config(tree, overrides)
