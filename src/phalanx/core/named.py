"""Things chosen by name in config (aggregators, pre-aggregation steps, attacks, workloads,
scenarios) and their parameters, through one idiom: a ``Registry`` per kind.

A registry maps a name to a value (a class, a builder, a path), the parameter model that
value's ``params`` are checked against, and a one-line description (what ``phalanx list``
prints). Every registry fails the same way: an unknown name, an unknown parameter or a bad
value is a ``ConfigError`` that lists what is valid. Registries are open: user code adds its
own entries with ``register(name, value)`` before building a run, e.g.
``ATTACKS.register("my_attack", MyAttack)``.

Parameters are a strict model like every config section: ``Params`` is
``phalanx.config.Strict`` under the name aggregation and attack code use; by itself it is
the empty model of a thing that takes none.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import ValidationError

from phalanx.config import Strict
from phalanx.config import Strict as Params
from phalanx.errors import ConfigError

T = TypeVar("T")
P = TypeVar("P", bound=Strict)

_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class Entry(Generic[T, P]):
    """One registered name: its value, its parameter model and what it is, in one line."""

    name: str
    value: T
    params: type[P]
    description: str


def no_params(value: object) -> type[Params]:
    """The parameter model of a value that takes none (``Params``, the empty model)."""
    return Params


def first_line(value: object) -> str:
    """The first line of ``value``'s own docstring (not one it inherits), or ""."""
    doc = inspect.cleandoc(getattr(value, "__doc__", None) or "")
    return doc.splitlines()[0] if doc else ""


class Registry(Mapping[str, T], Generic[T, P]):
    """The ``kind`` things chosen by name (an ``aggregator``, an ``attack``, ...).

    ``params_of`` gives the parameter model of a value registered without an explicit one
    (an attack class is its own model; a workload builder takes none). As a ``Mapping`` it
    reads like the dict it replaces (``name in registry``, ``sorted(registry)``); lookups
    that come from config go through ``entry``/``lookup``, which raise ``ConfigError``.
    """

    def __init__(self, kind: str, *, params_of: Callable[[T], type[P]]) -> None:
        self.kind = kind
        self._params_of = params_of
        self._entries: dict[str, Entry[T, P]] = {}

    def register(
        self,
        name: str,
        value: T,
        *,
        params: type[P] | None = None,
        description: str | None = None,
        replace: bool = False,
    ) -> T:
        """Add ``value`` under ``name`` and return it. ``params`` defaults to ``params_of
        (value)``, ``description`` to the first line of its docstring. A name already taken
        is an error unless ``replace`` is set, so two plug-ins cannot shadow each other."""
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(
                f"{self.kind} name {name!r} must be lower-case letters, digits and '_', "
                "starting with a letter"
            )
        if name in self._entries and not replace:
            raise ConfigError(
                f"{self.kind} {name!r} is already registered; pass replace=True to replace it"
            )
        model = params if params is not None else self._params_of(value)
        text = description if description is not None else first_line(value)
        self._entries[name] = Entry(name, value, model, text)
        return value

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a plug-in's or a test's clean-up); an unknown name is an error."""
        self.entry(name)  # ConfigError listing the valid names
        del self._entries[name]

    def entry(self, name: str) -> Entry[T, P]:
        """The entry of ``name``, or an error such as "unknown aggregator 'krm'; valid: ..."."""
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(self.names())
            raise ConfigError(f"unknown {self.kind} {name!r}; valid: {valid}") from None

    def lookup(self, name: str) -> T:
        """The value registered under ``name`` (``ConfigError`` listing the valid names)."""
        return self.entry(name).value

    def parse(self, name: str, params: Mapping[str, object]) -> P:
        """``params`` checked against the parameter model of ``name``."""
        return parse_params(self.kind, name, self.entry(name).params, params)

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._entries)

    def descriptions(self) -> dict[str, str]:
        """Name -> one-line description, sorted by name (for ``phalanx list``)."""
        return {name: self._entries[name].description for name in self.names()}

    def __getitem__(self, name: str) -> T:
        return self._entries[name].value

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def parse_params(kind: str, name: str, model: type[P], params: Mapping[str, object]) -> P:
    """``params`` checked against ``model``; an error names the bad key and the valid ones."""
    valid = ", ".join(sorted(model.model_fields)) or "(none)"
    unknown = sorted(set(params) - set(model.model_fields))
    if unknown:
        raise ConfigError(
            f"unknown parameter {', '.join(map(repr, unknown))} for {kind} {name!r}; valid: {valid}"
        )
    try:
        return model.model_validate(dict(params))
    except ValidationError as error:
        problems = "; ".join(
            ": ".join(filter(None, (".".join(str(p) for p in item["loc"]), item["msg"])))
            for item in error.errors()
        )
        raise ConfigError(f"{kind} {name!r}: {problems} (parameters: {valid})") from None


__all__ = ["Entry", "Params", "Registry", "first_line", "no_params", "parse_params"]
