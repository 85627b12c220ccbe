"""Issue 13's acceptance list, computed from the finished cells: each check PASS or FAIL
with the numbers it was decided on, or NOT RUN when its cells are missing.

Accuracy figures are means over the report's seeds; a drop is clean FedAvg's mean minus
the default's mean, in points; "worst" is the lowest over the attacks measured (each check
names how many). The checks read only the cells ``cells.acceptance_grid`` runs.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.byzantine.cells import F_RIGHT, F_UNDER, PARTITIONS, Key, Setting, attacks_in
from benchmarks.byzantine.grid import CLEAN, DEFAULT

Runs = Mapping[Key, Sequence[Mapping[str, Any]]]
CHANCE = 0.15  # ten classes: a model at or below this has learnt nothing usable
PASS, FAIL, NOT_RUN = "PASS", "FAIL", "NOT RUN"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # PASS, FAIL or NOT_RUN
    detail: str


def _mean(runs: Runs, key: Key, field: str = "accuracy") -> float | None:
    values = [o[field] for o in runs.get(key, ()) if o.get(field) is not None]
    return statistics.mean(values) if values else None


def _pts(value: float) -> str:
    return f"{100 * value:.1f}"


def _verdict(name: str, ok: bool, detail: str) -> Check:
    return Check(name, PASS if ok else FAIL, detail)


def _worst_drop(runs: Runs, partition: str, setting: Setting, limit: float) -> Check:
    name = f"{setting.label}, {partition}: worst drop vs clean FedAvg <= {limit:.0f} points"
    clean = _mean(runs, (partition, None, CLEAN, "fedavg"))
    means = {
        a: m
        for a in attacks_in(runs)
        if (m := _mean(runs, (partition, setting, a, DEFAULT))) is not None
    }
    if clean is None or not means:
        return Check(name, NOT_RUN, "clean FedAvg or the default under attack not measured")
    attack = min(means, key=lambda a: means[a])
    drop = clean - means[attack]
    low, low_attack = min((o["accuracy"], a) for a in means
                          for o in runs[(partition, setting, a, DEFAULT)])  # fmt: skip
    return _verdict(
        name,
        drop <= limit / 100 + 1e-9,
        f"clean FedAvg {_pts(clean)}, worst {attack} {_pts(means[attack])}: drop "
        f"{_pts(drop)} points (over {len(means)} attacks; lowest seed {_pts(low)}, "
        f"{low_attack})",
    )


def _not_below_fedavg(runs: Runs, partition: str, setting: Setting) -> Check:
    name = f"{setting.label}, {partition}: the default never below FedAvg under the same attack"
    pairs = {
        a: (d, f)
        for a in attacks_in(runs)
        if (d := _mean(runs, (partition, setting, a, DEFAULT))) is not None
        and (f := _mean(runs, (partition, setting, a, "fedavg"))) is not None
    }
    if not pairs:
        return Check(name, NOT_RUN, "the default and FedAvg not both measured under an attack")
    below = [f"{a} {_pts(d)} < {_pts(f)}" for a, (d, f) in pairs.items() if d < f]
    return _verdict(
        name,
        not below,
        f"below under: {', '.join(below)}"
        if below
        else f"at or above FedAvg under all {len(pairs)} attacks",
    )


def _no_seed_at_chance(runs: Runs, partition: str, setting: Setting) -> Check:
    name = f"{setting.label}, {partition}: no seed at chance (<= {CHANCE:.0%})"
    seeds = [
        (o["accuracy"], a)
        for a in attacks_in(runs)
        for o in runs.get((partition, setting, a, DEFAULT), ())
    ]
    if not seeds:
        return Check(name, NOT_RUN, "the default under attack not measured")
    accuracy, attack = min(seeds)
    return _verdict(
        name, accuracy > CHANCE, f"lowest seed {_pts(accuracy)} ({attack}; {len(seeds)} runs)"
    )


def _clean_cost(runs: Runs, partition: str, limit: float, what: str = "No attack") -> Check:
    name = f"{what}, {partition}: the default <= {limit:.0f} point below clean FedAvg"
    fedavg = _mean(runs, (partition, None, CLEAN, "fedavg"))
    default = _mean(runs, (partition, None, CLEAN, DEFAULT))
    if fedavg is None or default is None:
        return Check(name, NOT_RUN, "clean FedAvg or the clean default not measured")
    cost = fedavg - default
    return _verdict(
        name,
        cost <= limit / 100 + 1e-9,
        f"FedAvg {_pts(fedavg)}, default {_pts(default)}: {_pts(cost)} points",
    )


def _honest_rounds_lost(runs: Runs, limit: float) -> Check:
    name = f"Honest client-rounds lost to flags <= {limit:.0%}, every run of the default"
    shares = [
        (o["honest_rounds_lost_share"], key)
        for key, outcomes in runs.items()
        if key[3] == DEFAULT
        for o in outcomes
    ]
    if not shares:
        return Check(name, NOT_RUN, "no run of the default")
    share, (partition, setting, attack, _) = max(shares, key=lambda item: item[0])
    where = f"{partition}, " + ("clean" if setting is None else f"{setting.label}, {attack}")
    # Judged on the worst run; the mean over runs is the rate a looser reading would take.
    mean = statistics.mean(s for s, _ in shares)
    above = sum(1 for s, _ in shares if s > limit + 1e-12)
    return _verdict(
        name,
        share <= limit + 1e-12,
        f"worst {100 * share:.2f}% ({where}; {len(shares)} runs, {above} above "
        f"{limit:.0%}; mean over the runs {100 * mean:.2f}%)",
    )


def _backdoor(runs: Runs, partition: str, limit: float) -> Check:
    setting = F_RIGHT[0.2]
    name = f"Backdoor, {setting.label}, {partition}: success <= {limit:.0%}"
    outcomes = runs.get((partition, setting, "backdoor", DEFAULT), ())
    rates = [o["backdoor_asr"] for o in outcomes if o.get("backdoor_asr") is not None]
    if not rates:
        return Check(name, NOT_RUN, "the default under the backdoor attack not measured")
    mean = statistics.mean(rates)
    return _verdict(
        name, mean <= limit + 1e-9, f"mean {_pts(mean)}%, worst seed {_pts(max(rates))}%"
    )


def checks(runs: Runs) -> list[Check]:
    """Every acceptance check of issue 13, in its order."""
    twenty = F_RIGHT[0.2]
    out = [_worst_drop(runs, p, twenty, 3) for p in ("iid", "dirichlet0.5", "dirichlet0.3")]
    out += [
        _worst_drop(runs, "dirichlet0.1", twenty, 8),
        _not_below_fedavg(runs, "dirichlet0.1", twenty),
    ]
    for setting in (F_RIGHT[0.3], F_UNDER):
        out += [
            _worst_drop(runs, "dirichlet0.5", setting, 5),
            _no_seed_at_chance(runs, "dirichlet0.5", setting),
        ]
    out += [_clean_cost(runs, p, 1) for p in PARTITIONS]
    out += [
        _honest_rounds_lost(runs, 0.01),
        _backdoor(runs, "dirichlet0.5", 0.20),
        _clean_cost(runs, "dirichlet0.5", 1, "Backdoor defence's clean cost"),
    ]
    return out


def render(found: Sequence[Check]) -> list[str]:
    """Markdown lines: one per check, and a count."""
    lines = [
        "## Acceptance (issue 13)",
        "",
        "Means over the seeds above; drops against clean FedAvg on the same partition, in points.",
        "",
    ]
    lines += [f"- **{c.status}** {c.name}: {c.detail}" for c in found]
    counts = {s: sum(1 for c in found if c.status == s) for s in (PASS, FAIL, NOT_RUN)}
    return [*lines, "", ", ".join(f"{n} {s}" for s, n in counts.items()), ""]
