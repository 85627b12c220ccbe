"""Things chosen by name in config (aggregators, pre-aggregation steps, attacks) with their
parameters. One place turns an unknown name, an unknown parameter or a bad value into a
``ConfigError`` that lists what is valid, so every registry fails the same way."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from phalanx.errors import ConfigError

T = TypeVar("T")
P = TypeVar("P", bound=BaseModel)


class Params(BaseModel):
    """Base for a named thing's parameters: unknown keys are refused, values are checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def lookup(kind: str, name: str, table: Mapping[str, T]) -> T:
    """``table[name]``, or an error such as "unknown aggregator 'krm'; valid: krum, median"."""
    try:
        return table[name]
    except KeyError:
        raise ConfigError(f"unknown {kind} {name!r}; valid: {', '.join(sorted(table))}") from None


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
