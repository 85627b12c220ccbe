"""Tables and a heatmap from the accuracy-under-attack cells: one table per partition and
setting (Byzantine fraction, f right or under-estimated), one row per aggregator with the
mean and worst seed under each attack, the worst over the attacks, what its flags cost
honest clients, its discarded rounds and its backdoor success; then issue 13's acceptance
checks (``acceptance.py``)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.byzantine import acceptance
from benchmarks.byzantine.cells import Key, Setting, attacks_in, group
from benchmarks.byzantine.grid import AGGREGATORS, CLEAN

Runs = Mapping[Key, Sequence[Mapping[str, Any]]]
SUMMARY = ["clean", "worst", "honest flags", "honest lost %", "discarded", "backdoor %"]


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _accuracy(outcomes: Sequence[Mapping[str, Any]]) -> str:
    """Mean over seeds, and the worst seed when there are several; * when f was capped."""
    if not outcomes:
        return "—"
    values = [o["accuracy"] for o in outcomes]
    text = _pct(statistics.mean(values))
    text += f" / {_pct(min(values))}" if len(values) > 1 else ""
    return text + ("*" if any(o["capped"] for o in outcomes) else "")


@dataclass(frozen=True)
class Row:
    """One aggregator at one partition and setting: every cell text of its table row."""

    attacks: list[str]  # per attack: mean / worst seed
    summary: list[str]  # the SUMMARY columns


def row(runs: Runs, partition: str, setting: Setting, aggregator: str, attacks: list[str]) -> Row:
    clean = runs.get((partition, None, CLEAN, aggregator), [])
    attacked = {a: runs.get((partition, setting, a, aggregator), []) for a in attacks}
    means = {a: statistics.mean(o["accuracy"] for o in v) for a, v in attacked.items() if v}
    every = [o for v in attacked.values() for o in v]
    worst = "—"
    if means:
        attack = min(means, key=lambda a: means[a])
        low = min(o["accuracy"] for o in every)
        worst = f"{_pct(means[attack])} / {_pct(low)} ({attack})"
    runs_of_row = [*clean, *every]  # what the row's flags cost: clean run included
    flags = lost = discarded = backdoor = "—"
    if runs_of_row:
        flags = f"{statistics.mean(o['honest_flagged'] for o in runs_of_row):.1f}"
        lost = f"{100 * max(o['honest_rounds_lost_share'] for o in runs_of_row):.2f}"
        failed = [o["rounds_failed"] for o in runs_of_row]
        discarded = f"{statistics.mean(failed):.1f} / {max(failed)}"
    rates = [
        o["backdoor_asr"] for o in attacked.get("backdoor", []) if o.get("backdoor_asr") is not None
    ]
    if rates:
        backdoor = f"{_pct(statistics.mean(rates))} / {_pct(max(rates))}"
    return Row(
        [_accuracy(v) for v in attacked.values()],
        [_accuracy(clean), worst, flags, lost, discarded, backdoor],
    )


def header(meta: Mapping[str, Any]) -> list[str]:
    """What the tables were measured on: dataset, seeds and where they came from,
    validation, overrides."""
    seeds = ", ".join(map(str, meta["seeds"]))
    validation = {
        "scenario": "the `robust` scenario's own validation for every row, "
        "`max_relative_norm` included",
        "no_relative_norm": "the `robust` scenario's validation without "
        "`max_relative_norm`, for every row",
    }
    return [
        f"# Accuracy under Byzantine attack: {meta['dataset']}",
        "",
        f"- Seeds: {seeds} ({meta['seed_source']}); the tuning seeds of "
        "`benchmarks/byzantine/tuning.py` are excluded unless this line says otherwise.",
        f"- Validation: {validation[meta['validation']]}.",
        f"- Overrides on the `robust` scenario: {', '.join(meta['overrides']) or 'none'}.",
        "- f right: f = the Byzantine clients present; f under-estimated: f sized for 20% "
        "while 30% attack. Every row, the default's included, gets f the same way, capped "
        "(`*`) at what its rule tolerates (Bulyan n >= 4f + 3, Krum n >= 2f + 3). Clean "
        "runs keep the scenario's f (sized for 20%). FedAvg takes no f: it has no f "
        "under-estimated row.",
        "- Accuracy: final test accuracy (%), mean / worst seed. `worst`: the lowest mean "
        "over the attacks / the lowest seed, and the attack of the lowest mean. Honest "
        "flags: flags on honest updates, mean per run; honest lost: the largest share of "
        "honest client-rounds any run lost to flag sidelining; discarded: rounds discarded, "
        "mean / most in a run; backdoor: attack success rate, mean / worst seed (chance "
        "level on a clean model). These four are over the row's runs, its clean run "
        "included.",
        "",
    ]


def render(
    cells: Mapping[str, Mapping[str, Any]],
    meta: Mapping[str, Any],
    *,
    stem: str,
    out: Path,
    console: Console,
) -> list[acceptance.Check]:
    """Writes ``out/<stem>.md`` and ``.png``, prints the summary tables and the checks."""
    from phalanx.core.files import write_atomic

    runs = group(cells.values())
    partitions = list(dict.fromkeys(k[0] for k in runs))
    settings = sorted(
        {k[1] for k in runs if k[1] is not None}, key=lambda s: (s.fraction, -s.f_for)
    )
    attacks = attacks_in(runs)
    aggregators = [a for a in AGGREGATORS if any(k[3] == a for k in runs)]
    lines = header(meta)
    for partition in partitions:
        for setting in settings:
            text, table = _table(runs, partition, setting, attacks, aggregators)
            if table.row_count == 0:  # a setting not run on this partition (a preset)
                continue
            table.title = f"{meta['dataset']}, {table.title}"
            lines += text
            console.print(table)
    checks = acceptance.checks(runs)
    lines += acceptance.render(checks)
    for line in acceptance.render(checks):
        console.print(line, markup=False)
    write_atomic(out / f"{stem}.md", ("\n".join(lines) + "\n").encode())
    _heatmap(runs, meta["dataset"], partitions, settings, attacks, aggregators, out / f"{stem}.png")
    return checks


def _table(runs: Runs, partition: str, setting: Setting, attacks: list[str],
           aggregators: list[str]) -> tuple[list[str], Table]:  # fmt: skip
    """One partition and setting: its markdown lines, and its summary table for the console.
    Clean FedAvg, the reference of every drop, is under the heading even with no row."""
    title = f"{partition}, {setting.label}"
    columns = ["aggregator", SUMMARY[0], *attacks, *SUMMARY[1:]]
    reference = f"Clean FedAvg: {_accuracy(runs.get((partition, None, CLEAN, 'fedavg'), []))}"
    lines = [f"## {title}", "", reference + ".", "", "| " + " | ".join(columns) + " |",
             "|" + "---|" * len(columns)]  # fmt: skip
    table = Table(title=title, caption=reference)
    for column in ["aggregator", *SUMMARY]:
        table.add_column(column, justify="right")
    for aggregator in aggregators:
        found = row(runs, partition, setting, aggregator, attacks)
        if all(t == "—" for t in found.attacks):
            continue
        lines.append("| " + " | ".join([aggregator, found.summary[0], *found.attacks,
                                         *found.summary[1:]]) + " |")  # fmt: skip
        table.add_row(aggregator, *found.summary)
    return [*lines, ""], table


def _heatmap(
    runs: Runs,
    dataset: str,
    partitions: list[str],
    settings: list[Setting],
    attacks: list[str],
    aggs: list[str],
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not settings:
        return
    fig, axes = plt.subplots(
        len(partitions),
        len(settings),
        squeeze=False,
        sharey=True,
        figsize=(4.2 * len(settings), (0.45 * len(aggs) + 2) * len(partitions)),
    )
    columns = [CLEAN, *attacks]
    for i, partition in enumerate(partitions):
        for j, setting in enumerate(settings):
            ax = axes[i][j]
            grid = [
                [
                    100 * statistics.mean(o["accuracy"] for o in v)
                    if (v := runs.get((partition, None if a == CLEAN else setting, a, g)))
                    else float("nan")
                    for a in columns
                ]
                for g in aggs
            ]
            image = ax.imshow(grid, vmin=0, vmax=100, cmap="viridis", aspect="auto")
            for y, values in enumerate(grid):
                for x, value in enumerate(values):
                    ax.text(
                        x,
                        y,
                        f"{value:.0f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if value < 60 else "black",
                    )
            ax.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=8)
            ax.set_yticks(range(len(aggs)), aggs, fontsize=8)
            ax.set_title(f"{partition}, {setting.label}", fontsize=9)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="test accuracy (%)")
    fig.suptitle(f"phalanx: accuracy under attack, {dataset}, n = 20, mean over seeds")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
