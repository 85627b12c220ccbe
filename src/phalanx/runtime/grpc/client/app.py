"""A user's own client, named ``module:object`` on the command line.

The object gives what ``Simulation`` takes, so the same code runs simulated and deployed:
``model`` (a factory of the ``nn.Module``), ``clients`` (every client's ``ClientData``, in id
order: this process trains ``clients[id]``) and ``train`` (``train(model, data, ctx)``, the
SDK's ``UserTrainFn``). It is a ``ClientApp`` or any object with those three attributes, or
a function of no arguments that returns one (so data is built only in the process that
needs it). A name that does not resolve is a ``ConfigError`` saying what is missing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from phalanx.client.sdk import UserTrainFn
from phalanx.errors import ConfigError
from phalanx.workloads.base import ClientData

PARTS = ("model", "clients", "train")


@dataclass(frozen=True)
class ClientApp:
    model: Callable[[], nn.Module]
    clients: Sequence[ClientData]
    train: UserTrainFn


def load_app(spec: str) -> ClientApp:
    """The ``ClientApp`` that ``module:object`` (``object`` may be dotted) names."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"--app {spec!r} is not of the form module:object")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"--app {spec!r}: cannot import {module_name!r} ({exc})") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"--app {spec!r}: {module_name!r} has no {attribute!r}")
        target = getattr(target, part)
    if not _complete(target) and callable(target):
        target = target()
    if not _complete(target):
        missing = [p for p in PARTS if not hasattr(target, p)]
        raise ConfigError(
            f"--app {spec!r} gives no {', '.join(missing)}: name an object with model "
            "(a factory), clients (ClientData per client) and train (the training function), "
            "or a function returning one"
        )
    if not callable(target.model) or not callable(target.train):
        raise ConfigError(f"--app {spec!r}: model and train must be callables")
    return ClientApp(target.model, list(target.clients), target.train)


def _complete(target: object) -> bool:
    return all(hasattr(target, part) for part in PARTS)
