"""``phalanx list scenarios|aggregators|attacks|keys``: what can be named in a configuration.

Everything is read from where it is defined (the registries, the pydantic models and their
``Field`` descriptions, the shipped TOML files), so the listing cannot drift from the code.
"""

from __future__ import annotations

import enum
import sys
import types
import typing
from collections.abc import Iterator
from enum import StrEnum
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from rich.console import Console
from rich.table import Table
from rich.text import Text

from phalanx.aggregation.registry import RULES, STEPS
from phalanx.config import RunConfig
from phalanx.core.named import Entry
from phalanx.faults.attacks import ColludingAttack, ModelAttack
from phalanx.faults.byzantine import ATTACKS
from phalanx.scenarios import available, leading_comment, scenario_path


class Topic(StrEnum):
    SCENARIOS = "scenarios"
    AGGREGATORS = "aggregators"
    ATTACKS = "attacks"
    KEYS = "keys"


def list_command(
    topic: Annotated[Topic, typer.Argument(help="What to list.", show_default=False)],
) -> None:
    """List shipped scenarios, aggregation rules and steps, attacks, or every config key."""
    console = Console() if sys.stdout.isatty() else Console(width=160)
    builders = {
        Topic.SCENARIOS: scenarios_table,
        Topic.AGGREGATORS: aggregators_table,
        Topic.ATTACKS: attacks_table,
        Topic.KEYS: keys_table,
    }
    console.print(builders[topic]())


# --- scenarios -----------------------------------------------------------------------------


def scenarios_table() -> Table:
    table = _table("shipped scenarios (phalanx run NAME)", "name", "what it runs")
    for name in available():
        table.add_row(name, leading_comment(scenario_path(name).read_text(encoding="utf-8")))
    return table


# --- aggregators and attacks -------------------------------------------------------------


def aggregators_table() -> Table:
    table = _table(
        "aggregation rules (aggregation.name) and steps (aggregation.pre)",
        "name", "kind", "tolerates", "parameters (type = default: meaning)",
    )  # fmt: skip
    entries: list[tuple[str, Entry[Any, Any]]] = [
        *(("rule", RULES.entry(name)) for name in RULES.names()),
        *(("step", STEPS.entry(name)) for name in STEPS.names()),
    ]
    for kind, entry in entries:
        table.add_row(entry.name, kind, _tolerance(entry), _params(entry.params))
    return table


def _tolerance(entry: Entry[Any, Any]) -> str:
    tolerance = getattr(entry.value, "tolerance", None)
    return "no bound on f" if tolerance is None else "n >= {}f + {}".format(*tolerance)


def attacks_table() -> Table:
    table = _table(
        "attacks (faults.byzantine.attack, parameters in faults.byzantine.params)",
        "name", "kind", "parameters (type = default: meaning)",
    )  # fmt: skip
    for name, cls in sorted(ATTACKS.items()):
        table.add_row(name, _attack_kind(cls), _params(cls))
    return table


def _attack_kind(cls: type) -> str:
    if issubclass(cls, ColludingAttack):
        return "model poisoning, colluding"
    return "model poisoning" if issubclass(cls, ModelAttack) else "data poisoning"


def _params(model: type[BaseModel]) -> str:
    rows = [
        f"{name}: {type_name(field.annotation)} = {_default(field)}"
        + (f": {field.description}" if field.description else "")
        for name, field in model.model_fields.items()
    ]
    return "\n".join(rows) or "(none)"


# --- configuration keys --------------------------------------------------------------------


def keys_table() -> Table:
    table = _table("configuration keys (TOML, or --set KEY=VALUE)", "key", "type", "default",
                   "meaning", lines=False)  # fmt: skip
    for key, field in config_keys():
        table.add_row(key, type_name(field.annotation), _default(field), field.description or "")
    return table


def config_keys(
    model: type[BaseModel] = RunConfig, prefix: str = ""
) -> Iterator[tuple[str, FieldInfo]]:
    """Every leaf key of ``model`` as (dotted key, field), tables expanded in place. A table
    with variants (``workload``) lists each variant's keys once, tagged ``[name=...]``."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        tables = _tables(field.annotation)
        if not tables:
            yield key, field
        elif len(tables) == 1:
            yield from config_keys(tables[0], f"{key}.")
        else:
            yield from _variant_keys(key, field, tables)


def _variant_keys(
    key: str, field: FieldInfo, variants: list[type[BaseModel]]
) -> Iterator[tuple[str, FieldInfo]]:
    names = [str(v.model_fields["name"].default) for v in variants]
    yield (
        f"{key}.name",
        FieldInfo(
            annotation=str,
            default=field.get_default(call_default_factory=True).name,
            description=f"which {key}: {', '.join(names)}; the keys below depend on it",
        ),
    )
    for variant, tag in zip(variants, names, strict=True):
        for sub, field in config_keys(variant, f"{key}."):
            if not sub.endswith(".name"):
                yield f"{sub} (if name = {tag})", field


def _tables(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a field's annotation is made of (a table or a union of them)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) is Annotated:
        return _tables(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _tables(arg)]
    return []


# --- rendering ---------------------------------------------------------------------------


def type_name(annotation: Any) -> str:
    """A short, TOML-minded spelling of a type: ``int``, ``float | null``, ``list of crash|...``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is typing.Literal:
        return "|".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is tuple:
        inner = [a for a in args if a is not Ellipsis]
        return f"list of {type_name(inner[0])}" if inner else "list"
    if origin is dict:
        return "table"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "|".join(str(m.value) for m in annotation)
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "(required)"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_default_item(v) for v in value) + "]"
    return repr(value) if isinstance(value, str) else str(value)


def _default_item(value: Any) -> str:
    return str(value.value) if isinstance(value, enum.Enum) else repr(value)


_WIDE = {"meaning", "what it runs", "parameters (type = default: meaning)", "key"}


class _Table(Table):
    """A table whose cells are plain text: keys and descriptions hold brackets, never markup."""

    def add_row(self, *cells: Any, **options: Any) -> None:
        super().add_row(*(Text(str(c)) for c in cells), **options)


def _table(title: str, *columns: str, lines: bool = True) -> Table:
    table = _Table(title=title, show_lines=lines)
    for column in columns:
        table.add_column(column, overflow="fold", max_width=None if column in _WIDE else 32)
    return table
