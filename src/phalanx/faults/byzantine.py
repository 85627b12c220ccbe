"""Byzantine clients: who they are, and which attack they run.

The set is fixed for the whole run, a function of the config and the seed alone, so a
resumed run has the same adversaries as an uninterrupted one. The attack is chosen by name
from one registry covering model poisoning (``attacks``) and data poisoning (``poisoning``):
an unknown name or parameter is a ``ConfigError`` that lists what is valid.
"""

from __future__ import annotations

import logging

from phalanx.config import ByzantineConfig
from phalanx.core.named import Registry
from phalanx.core.rng import numpy_rng
from phalanx.errors import ConfigError
from phalanx.faults.adaptive import Mimic, MinMax, MinSum
from phalanx.faults.attacks import (
    Alie,
    Attack,
    ColludingAttack,
    Gaussian,
    Ipm,
    ModelAttack,
    Scaling,
    SignFlip,
)
from phalanx.faults.optimised import AlieOptimal, IpmOptimal
from phalanx.faults.poisoning import Backdoor, LabelFlip

log = logging.getLogger("phalanx.faults")


def _own_model(cls: type[Attack]) -> type[Attack]:
    return cls


# An attack class is its own parameter model. User code adds one with
# ``phalanx.register_attack("my_attack", MyAttack)`` (a ``ModelAttack`` or
# ``ColludingAttack`` subclass), then names it in ``faults.byzantine.attack``
# (examples/custom_attack.py).
ATTACKS: Registry[type[Attack], Attack] = Registry("attack", params_of=_own_model)
for _cls, _text in (
    (SignFlip, "send the update negated (times scale)"),
    (Scaling, "send the update scaled by factor (model replacement)"),
    (Gaussian, "send pure Gaussian noise"),
    (Alie, "colluding: mean - z x std of the honest updates (a little is enough)"),
    (Ipm, "colluding: -epsilon x the honest mean (inner-product manipulation)"),
    (AlieOptimal, "colluding: ALIE with z optimised against the rule under the norm checks"),
    (IpmOptimal, "colluding: IPM with epsilon optimised against the rule under the norm checks"),
    (MinMax, "colluding: mean + gamma p, max distance within the honest diameter"),
    (MinSum, "colluding: mean + gamma p, summed distance within the honest maximum"),
    (Mimic, "colluding: every colluder copies one honest update"),
    (LabelFlip, "data poisoning: train on mirrored labels"),
    (Backdoor, "data poisoning: stamp a trigger and relabel to the target class"),
):
    ATTACKS.register(_cls.name, _cls, description=_text)


def register_attack(
    name: str,
    attack: type[Attack],
    *,
    description: str | None = None,
    replace: bool = False,
) -> type[Attack]:
    """Make ``attack`` (a ``ModelAttack`` or ``ColludingAttack`` subclass) choosable as
    ``faults.byzantine.attack = name``; its pydantic fields are the parameters
    ``faults.byzantine.params`` is checked against. A taken name is a ``ConfigError`` unless
    ``replace``; so is a class that is not an attack. Returns the class, so it serves as a
    decorator's body too. ``phalanx list attacks`` shows it with ``description`` (default:
    the first line of its docstring)."""
    if not (isinstance(attack, type) and issubclass(attack, (ModelAttack, ColludingAttack))):
        raise ConfigError(
            f"attack {name!r}: {attack!r} is not a ModelAttack or ColludingAttack subclass"
        )
    return ATTACKS.register(name, attack, description=description, replace=replace)


def unregister_attack(name: str) -> None:
    """Forget a registered attack (a test's or a plug-in's clean-up); unknown: ConfigError."""
    ATTACKS.unregister(name)


def build_attack(config: ByzantineConfig) -> Attack:
    """The attack ``config.attack`` with ``config.params`` checked against its parameters."""
    return ATTACKS.parse(config.attack, config.params)


def byzantine_clients(config: ByzantineConfig, num_clients: int, seed: int) -> frozenset[int]:
    """``config.clients`` when listed, else round(fraction x num_clients) (half up) clients
    drawn without replacement from the stream "byzantine" of ``seed``."""
    if config.clients is not None:
        if config.fraction > 0:
            raise ConfigError(
                "faults.byzantine: give clients or fraction, not both "
                f"(clients={list(config.clients)}, fraction={config.fraction})"
            )
        bad = sorted(c for c in config.clients if not 0 <= c < num_clients)
        if bad:
            raise ConfigError(
                f"faults.byzantine.clients {bad} are not client ids (0..{num_clients - 1})"
            )
        return frozenset(config.clients)
    count = int(config.fraction * num_clients + 0.5)
    if config.fraction > 0 and count == 0:
        log.warning(
            "faults.byzantine.fraction=%s of %s clients rounds to no Byzantine client",
            config.fraction,
            num_clients,
        )
    chosen = numpy_rng(seed, "byzantine").choice(num_clients, size=count, replace=False)
    return frozenset(int(c) for c in chosen)
