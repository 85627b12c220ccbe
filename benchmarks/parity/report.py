"""Turn medians into verdicts and tables: the five targets, rich output, markdown.

The targets are the seed-parity milestone's: phalanx must beat the seed by 4x whole-process
and 10x training-only, stay within 1.5x of the batched plain-PyTorch floor without faults,
and lose no accuracy against the seed; and (issue 9) the default ``phalanx run``, plots and
progress included, must take at most 1.25x the floor's whole-process time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.common.measure import Measurement

# --- verdicts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """A ratio (or difference) with its target; ``passed`` is None when not computable."""

    name: str
    value: float | None
    target: str
    passed: bool | None
    unit: str


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b is not None and b > 0 else None


def checks(m: dict[str, Measurement]) -> list[Check]:
    """The targets of the seed-parity milestone, and the default command against the floor."""
    none = Measurement()
    seed, on = m.get("seed", none), m.get("phalanx_on", none)
    off, floor = m.get("phalanx_off", none), m.get("plain_batched", none)
    whole = _ratio(seed.whole_s, on.whole_s)
    train = _ratio(seed.train_s, on.train_s)
    overhead = _ratio(off.train_s, floor.train_s)
    typed = _ratio(m.get("phalanx_default", none).whole_s, floor.whole_s)
    gain = None
    if on.accuracy is not None and seed.accuracy is not None:
        gain = on.accuracy - seed.accuracy

    def verdict(value: float | None, ok: Callable[[float], bool]) -> bool | None:
        return None if value is None else ok(value)

    return [
        Check(
            "seed whole / phalanx-on whole", whole, ">= 4x", verdict(whole, lambda v: v >= 4), "x"
        ),
        Check(
            "seed train / phalanx-on train", train, ">= 10x", verdict(train, lambda v: v >= 10), "x"
        ),
        Check(
            "phalanx-off train / batched-floor train",
            overhead,
            "<= 1.5x",
            verdict(overhead, lambda v: v <= 1.5),
            "x",
        ),
        Check("accuracy phalanx-on - seed", gain, ">= 0", verdict(gain, lambda v: v >= 0), "acc"),
        Check(
            "phalanx run as typed whole / batched-floor whole",
            typed,
            "<= 1.25x",
            verdict(typed, lambda v: v <= 1.25),
            "x",
        ),
    ]


# --- output ------------------------------------------------------------------------------


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _check_value(check: Check) -> str:
    if check.value is None:
        return "—"
    return f"{check.value:.2f}x" if check.unit == "x" else f"{check.value:+.4f}"


def _verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "N/A"}[passed]


HEADERS = ("contender", "whole-process s", "training-only s", "peak RSS MiB", "final accuracy")


def _row(label: str, m: Measurement) -> list[str]:
    """One table row; a contender with a note (a failure) is flagged with ``*``."""
    return [
        f"{label} *" if m.error else label,
        _num(m.whole_s, ".2f"),
        _num(m.train_s, ".3f"),
        _num(m.rss_mib, ".0f"),
        _num(m.accuracy, ".4f"),
    ]


def _notes(rows: list[tuple[str, Measurement]]) -> list[str]:
    """Why a flagged row has no (or fewer) numbers, one line per contender."""
    return [f"{label}: {m.error}" for label, m in rows if m.error]


def render(console: Console, rows: list[tuple[str, Measurement]], verdicts: list[Check]) -> None:
    """The results table and its failure notes, then the targets with PASS/FAIL."""
    table = Table(title="seed parity (medians)")
    for header in HEADERS:
        table.add_column(header, justify="left" if header == "contender" else "right")
    for label, m in rows:
        table.add_row(*_row(label, m))
    console.print(table)
    for note in _notes(rows):
        console.print(f"* {note}", style="yellow", markup=False)
    colour = {True: "green", False: "red", None: "yellow"}
    targets = Table(title="targets")
    for header in ("check", "value", "target", "result"):
        targets.add_column(header)
    for c in verdicts:
        result = f"[{colour[c.passed]}]{_verdict(c.passed)}[/]"
        targets.add_row(c.name, _check_value(c), c.target, result)
    console.print(targets)


def to_markdown(
    rows: list[tuple[str, Measurement]], verdicts: list[Check], info: dict[str, Any]
) -> str:
    """Both tables as GitHub markdown, for the README."""
    lines = [f"| {' | '.join(HEADERS)} |", "|---|" + "---:|" * (len(HEADERS) - 1)]
    lines += [f"| {' | '.join(_row(label, m))} |" for label, m in rows]
    notes = _notes(rows)
    if notes:
        lines += ["", *(f"- \\* {note}" for note in notes)]
    lines += ["", "| check | value | target | result |", "|---|---:|---|---|"]
    lines += [
        f"| {c.name} | {_check_value(c)} | {c.target} | {_verdict(c.passed)} |" for c in verdicts
    ]
    machine = ", ".join(f"{k} {v}" for k, v in info.items())
    return "\n".join([*lines, "", f"_{machine}; threads pinned to 1; medians._", ""])
