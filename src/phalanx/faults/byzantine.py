"""Byzantine clients: who they are, and which attack they run.

The set is fixed for the whole run, a function of the config and the seed alone, so a
resumed run has the same adversaries as an uninterrupted one. The attack is chosen by name
from one registry covering model poisoning (``attacks``) and data poisoning (``poisoning``):
an unknown name or parameter is a ``ConfigError`` that lists what is valid.
"""

from __future__ import annotations

import logging

from phalanx.config import ByzantineConfig
from phalanx.core.named import lookup, parse_params
from phalanx.core.rng import numpy_rng
from phalanx.errors import ConfigError
from phalanx.faults.attacks import Alie, Attack, Gaussian, Ipm, Scaling, SignFlip
from phalanx.faults.poisoning import Backdoor, LabelFlip

log = logging.getLogger("phalanx.faults")

ATTACKS: dict[str, type[Attack]] = {
    cls.name: cls for cls in (SignFlip, Scaling, Gaussian, Alie, Ipm, LabelFlip, Backdoor)
}


def build_attack(config: ByzantineConfig) -> Attack:
    """The attack ``config.attack`` with ``config.params`` checked against its parameters."""
    cls = lookup("attack", config.attack, ATTACKS)
    return parse_params("attack", config.attack, cls, config.params)


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
