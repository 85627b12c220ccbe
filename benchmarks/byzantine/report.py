"""Tables and a heatmap from the accuracy-under-attack cells: mean over seeds per
(partition, fraction, aggregator, attack), each aggregator's clean accuracy and worst case,
backdoor success rates, and the acceptance checks against clean FedAvg."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.byzantine.grid import AGGREGATORS, ATTACKS, CLEAN, DEFAULT

Cells = dict[str, dict[str, Any]]
Key = tuple[str, float, str, str]  # partition, fraction, attack, aggregator


def _means(cells: Cells) -> tuple[dict[Key, float], dict[Key, float], set[Key]]:
    accuracy: dict[Key, list[float]] = defaultdict(list)
    asr: dict[Key, list[float]] = defaultdict(list)
    capped: set[Key] = set()
    for item in cells.values():
        c, o = item["cell"], item["outcome"]
        key = (c["partition"], c["fraction"], c["attack"], c["aggregator"])
        accuracy[key].append(o["accuracy"])
        if o.get("backdoor_asr") is not None:
            asr[key].append(o["backdoor_asr"])
        if o["capped"]:
            capped.add(key)
    return (
        {k: statistics.mean(v) for k, v in accuracy.items()},
        {k: statistics.mean(v) for k, v in asr.items()},
        capped,
    )


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def render(cells: Cells, *, dataset: str, out: Path, console: Console) -> None:
    accuracy, asr, capped = _means(cells)
    partitions = sorted({k[0] for k in accuracy})
    fractions = sorted({k[1] for k in accuracy if k[1] > 0})
    attacks = [a for a in ATTACKS if any(k[2] == a for k in accuracy)]
    aggregators = [a for a in AGGREGATORS if any(k[3] == a for k in accuracy)]
    lines = [f"# Accuracy under Byzantine attack: {dataset}", ""]
    lines += ["Final test accuracy (%), mean over seeds; n = 20 clients, all asked every round. "
              "`worst` is the lowest over the attacks; `*` marks f lowered to the most the rule "
              "tolerates (Bulyan n >= 4f + 3, Krum n >= 2f + 3).", ""]  # fmt: skip
    for partition in partitions:
        for fraction in fractions:
            header = ["aggregator", CLEAN, *attacks, "worst"]
            table = Table(title=f"{dataset}, {partition}, {fraction:.0%} Byzantine")
            for column in header:
                table.add_column(column, justify="right")
            lines += [f"## {partition}, {fraction:.0%} Byzantine", "",
                      "| " + " | ".join(header) + " |",
                      "|" + "---|" * len(header)]  # fmt: skip
            for agg in aggregators:
                clean = accuracy.get((partition, 0.0, CLEAN, agg))
                row = [agg, _pct(clean)]
                values = []
                for attack in attacks:
                    value = accuracy.get((partition, fraction, attack, agg))
                    mark = "*" if (partition, fraction, attack, agg) in capped else ""
                    row.append(_pct(value) + mark)
                    if value is not None:
                        values.append(value)
                row.append(_pct(min(values)) if values else "—")
                table.add_row(*row)
                lines.append("| " + " | ".join(row) + " |")
            console.print(table)
            lines.append("")
    lines += _backdoor(asr, partitions, fractions, aggregators)
    lines += _honest_flags(cells, partitions, [0.0, *fractions])
    lines += _acceptance(accuracy, partitions, attacks)
    for line in _acceptance(accuracy, partitions, attacks):
        console.print(line)
    (out / f"byzantine_{dataset}.md").write_text("\n".join(lines) + "\n")
    _heatmap(accuracy, dataset, partitions, fractions, attacks, aggregators, out)


def _backdoor(
    asr: dict[Key, float], partitions: list[str], fractions: list[float], aggs: list[str]
) -> list[str]:
    columns = [(p, f) for p in partitions for f in fractions]
    if not any((p, f, "backdoor", a) in asr for p, f in columns for a in aggs):
        return []
    lines = ["## Backdoor attack success rate (%)", "",
             "Share of test images (true class not the target) classified as the target once "
             "the trigger is stamped. Clean models score this rate by chance.", "",
             "| aggregator | " + " | ".join(f"{p}, {f:.0%}" for p, f in columns) + " |",
             "|" + "---|" * (len(columns) + 1)]  # fmt: skip
    for agg in aggs:
        values = [_pct(asr.get((p, f, "backdoor", agg))) for p, f in columns]
        lines.append(f"| {agg} | " + " | ".join(values) + " |")
    return [*lines, ""]


def _honest_flags(cells: Cells, partitions: list[str], fractions: list[float]) -> list[str]:
    """The default's flags on honest updates (mean per run) and the honest client-rounds
    they cost (the largest share of any run), per partition and fraction, from the cells
    that measured them."""
    flags: dict[tuple[str, float], list[tuple[int, float]]] = defaultdict(list)
    for item in cells.values():
        c, o = item["cell"], item["outcome"]
        if c["aggregator"] == DEFAULT and "honest_flagged" in o:
            flags[(c["partition"], c["fraction"])].append(
                (o["honest_flagged"], o["honest_rounds_lost_share"])
            )
    if not flags:
        return []
    lines = ["## Honest clients and the default's flags", "",
             "Flags on honest updates (mean per run, over attacks and seeds) and the largest "
             "share of honest client-rounds any run lost to flag sidelining.", "",
             "| partition | Byzantine | honest flags per run | worst share of rounds lost |",
             "|---|---|---|---|"]  # fmt: skip
    for partition in partitions:
        for fraction in fractions:
            runs = flags.get((partition, fraction))
            if runs:
                mean = statistics.mean(f for f, _ in runs)
                worst = max(share for _, share in runs)
                lines.append(f"| {partition} | {fraction:.0%} | {mean:.1f} | {_pct(worst)}% |")
    return [*lines, ""]


def _acceptance(accuracy: dict[Key, float], partitions: list[str], attacks: list[str]) -> list[str]:
    lines = ["## Checks at 20% Byzantine clients (points against clean FedAvg)", ""]
    for partition in partitions:
        clean = accuracy.get((partition, 0.0, CLEAN, "fedavg"))
        default_clean = accuracy.get((partition, 0.0, CLEAN, DEFAULT))
        if clean is None:
            continue
        drops = {a: accuracy.get((partition, 0.2, a, DEFAULT)) for a in attacks}
        worst = min((v for v in drops.values() if v is not None), default=None)
        fedavg = {a: accuracy.get((partition, 0.2, a, "fedavg")) for a in attacks}
        big = [a for a, v in fedavg.items() if v is not None and clean - v > 0.20]
        lines.append(f"- {partition}: clean FedAvg {_pct(clean)}; default clean "
                     f"{_pct(default_clean)} (cost "
                     f"{_pct(None if default_clean is None else clean - default_clean)} points); "
                     f"default worst case under attack {_pct(worst)} (drop "
                     f"{_pct(None if worst is None else clean - worst)} points); FedAvg loses "
                     f"more than 20 points under: {', '.join(big) or 'none'}")  # fmt: skip
    return [*lines, ""]


def _heatmap(
    accuracy: dict[Key, float],
    dataset: str,
    partitions: list[str],
    fractions: list[float],
    attacks: list[str],
    aggs: list[str],
    out: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(p, f) for p in partitions for f in fractions]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 0.45 * len(aggs) + 2),
                             squeeze=False, sharey=True)  # fmt: skip
    columns = [CLEAN, *attacks]
    for ax, (partition, fraction) in zip(axes[0], panels, strict=True):
        grid = [
            [
                100 * accuracy.get((partition, 0.0 if a == CLEAN else fraction, a, g), float("nan"))
                for a in columns
            ]
            for g in aggs
        ]
        image = ax.imshow(grid, vmin=0, vmax=100, cmap="viridis", aspect="auto")
        for i, row in enumerate(grid):
            for j, value in enumerate(row):
                ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if value < 60 else "black")  # fmt: skip
        ax.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(aggs)), aggs, fontsize=8)
        ax.set_title(f"{partition}, {fraction:.0%} Byzantine", fontsize=9)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="test accuracy (%)")
    fig.suptitle(f"phalanx: accuracy under attack, {dataset}, n = 20")
    fig.savefig(out / f"byzantine_{dataset}.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
