"""Candidate defaults on TUNING seeds only: which robust configuration to ship.

Each candidate is a set of overrides on the shipped ``robust`` scenario (centred clipping,
f = 4 of 20, health feedback); each runs a few hard scenarios (30% Byzantine at Dirichlet
0.5, where f = 4 under-estimates the 6 attackers; the clean partitions, where flags punish
honest clients and a backdoor defence may cost accuracy; the backdoor at 20%). The seeds
here choose the default and must never be the seeds a report is drawn on
(``byzantine_accuracy``'s held-out seeds).

    .venv/bin/python -m benchmarks.byzantine.tuning                    # every candidate
    .venv/bin/python -m benchmarks.byzantine.tuning --candidates momentum_flags persistent_flags
    .venv/bin/python -m benchmarks.byzantine.tuning --check --candidates persistent_flags
    .venv/bin/python -m benchmarks.byzantine.tuning --set heterogeneity --jobs 2 --candidates fedavg
    .venv/bin/python -m benchmarks.byzantine.tuning --set sign_flip --summary --candidates A B

Prints one table per candidate (accuracy, backdoor success, discarded rounds, honest flags,
share of honest client-rounds lost to flag sidelining) and keeps finished runs in a JSON file, so an
interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import statistics
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from benchmarks.byzantine.grid import ATTACKS, CLEAN, DEFAULT, Cell, run_cell
from benchmarks.common.measure import REPO_ROOT

# 5, 6 and 18 since the fourth tuning: they reproduce the held-out Dirichlet 0.1 failures
# (docs/byzantine_tuning.md).
TUNING_SEEDS = (42, 7, 5, 6, 18)  # chosen on, never reported on

# Every candidate sets its whole aggregation line, so it does not move with the shipped one.
_MOMENTUM_FLAGS = ["aggregation.params={flag_alignment=0.0}", "aggregation.pre=[]"]
_NO_MOMENTUM_FLAGS = "aggregation.params={}"


def _persistent(params: str = "{}", *, before: str = "", after: str = "") -> list[str]:
    """persistent_flags with ``params`` (and steps ``before`` / ``after`` it), feedback on."""
    steps = [before, f"{{name='persistent_flags', params={params}}}", after]
    pre = ", ".join(step for step in steps if step)
    return [_NO_MOMENTUM_FLAGS, f"aggregation.pre=[{pre}]", "aggregation.health_feedback=true"]


def _no_feedback(pre: str, *extra: str) -> list[str]:
    """Centred clipping without momentum flags behind the steps ``pre``, feedback off."""
    return [
        _NO_MOMENTUM_FLAGS,
        f"aggregation.pre=[{pre}]",
        "aggregation.health_feedback=false",
        *extra,
    ]


# The health monitor's cool-down too: robust.toml's is 1 since the backdoor tuning, and the
# candidates before it ran with the engine's default of 3.
_COOLDOWN_3 = "health.cooldown_rounds=3"

CANDIDATES: dict[str, list[str]] = {
    "momentum_flags": [*_MOMENTUM_FLAGS, "aggregation.health_feedback=true"],
    "no_feedback": [*_MOMENTUM_FLAGS, "aggregation.health_feedback=false"],
    "persistent_flags": _persistent(),  # the shipped default of the first tuning
    "persistent_flags t=2": _persistent("{threshold=2.0}"),
    "persistent_flags t=0.5": _persistent("{threshold=0.5}"),
    "persistent_flags drift=0.1": _persistent("{drift=0.1}"),
    "nnm > centered_clipping": _no_feedback("{name='nnm'}"),
    # Backdoor defences (issue 13), each with persistent_flags in front of centred clipping.
    "flame > persistent_flags": _persistent(before="{name='flame'}"),
    "foolsgold > persistent_flags": _persistent(before="{name='foolsgold'}"),
    "persistent_flags > winsorise": _persistent(after="{name='winsorise'}"),
    "persistent_flags > winsorise consensus=0.4": _persistent(
        after="{name='winsorise', params={consensus=0.4}}"
    ),
    "persistent_flags > winsorise consensus=0.5": _persistent(
        after="{name='winsorise', params={consensus=0.5}}"
    ),
    "persistent_flags > winsorise consensus=1": _persistent(
        after="{name='winsorise', params={consensus=1.0}}"
    ),
    "persistent_flags > winsorise consensus=0.5, cooldown 1": [
        *_persistent(after="{name='winsorise', params={consensus=0.5}}"),
        "health.cooldown_rounds=1",
    ],
}
_COOLDOWN_1 = "health.cooldown_rounds=1"


def _shipped(flags: str = "{}", winsorise: str | None = "consensus=0.5", *extra: str) -> list[str]:
    """The shipped line (persistent_flags with ``flags`` > winsorise with ``winsorise``,
    None: no winsorise) and its cool-down of 1, with ``extra`` overrides before that."""
    after = "" if winsorise is None else f"{{name='winsorise', params={{{winsorise}}}}}"
    return _flags_then(after, flags, *extra)


def _flags_then(after: str, flags: str = "{}", *extra: str) -> list[str]:
    """persistent_flags with ``flags``, the steps ``after`` it, and the cool-down of 1."""
    return [*_persistent(flags, after=after), *extra, _COOLDOWN_1]


# Heterogeneity (the held-out report's Dirichlet 0.3 and 0.1 failures): the shipped line
# taken apart, and plain FedAvg behind the same validation as the baseline to beat.
CANDIDATES |= {
    "fedavg": [
        "aggregation.name='fedavg'",
        "aggregation.params={}",
        "aggregation.pre=[]",
        "aggregation.health_feedback=false",
    ],
    "shipped, no feedback": _no_feedback(
        "{name='persistent_flags'}, {name='winsorise', params={consensus=0.5}}", _COOLDOWN_1
    ),
    "shipped, no winsorise": _shipped(winsorise=None),
    "shipped, consensus=0.3": _shipped(winsorise="consensus=0.3"),
    # Bucketing (Karimireddy et al. 2022) behind the flags, which judge clients, not buckets.
    "shipped, bucketing before winsorise": _flags_then(
        "{name='bucketing'}, {name='winsorise', params={consensus=0.5}}"
    ),
    "shipped, bucketing after winsorise": _flags_then(
        "{name='winsorise', params={consensus=0.5}}, {name='bucketing'}"
    ),
    # The shortfall counted in spreads of the round's alignments (a robust z-score).
    **{
        f"relative flags d={drift} t={threshold}": _shipped(
            f"{{relative=true, drift={float(drift)}, threshold={float(threshold)}}}"
        )
        for drift, threshold in ((1, 3), (2, 8), (1.5, 5), (1.25, 4), (1, 5))
    },
    "relative flags d=1.5 t=5, no winsorise": _shipped(
        "{relative=true, drift=1.5, threshold=5.0}", None
    ),
    "relative flags d=1 t=3, no winsorise": _shipped(
        "{relative=true, drift=1.0, threshold=3.0}", None
    ),
    "shipped, tau_scale=2": _shipped("{}", "consensus=0.5", "aggregation.params={tau_scale=2.0}"),
    "shipped, widen=1.5 (gate first)": _shipped(winsorise="consensus=0.5, widen=1.5"),
    "shipped, widen=2 (gate first)": _shipped(winsorise="consensus=0.5, widen=2.0"),
    "shipped, one-sided winsorise": _shipped(winsorise="consensus=0.5, one_sided=true"),
    "relative flags d=1 t=5, one-sided winsorise": _shipped(
        "{relative=true, drift=1.0, threshold=5.0}", "consensus=0.5, one_sided=true"
    ),
    # Clamp only the coordinates honest clients barely move (a trigger's weights).
    "shipped, quiet=0.5": _shipped(winsorise="consensus=0.5, quiet=0.5"),
    "shipped, quiet=0.25": _shipped(winsorise="consensus=0.5, quiet=0.25"),
    # Flag only rows pointing clearly away from the others this round.
    "shipped, max_cosine=-0.1": _shipped("{max_cosine=-0.1}"),
    "shipped, max_cosine=-0.2": _shipped("{max_cosine=-0.2}"),
    # Fourth tuning: DnC's spectral filter (Shejwalkar and Houmansadr 2021) in place of
    # winsorising, which clips honest tails on non-IID data.
    "shipped, dnc for winsorise": _flags_then("{name='dnc'}"),
    # DnC's suspects clamped per coordinate to the others' range instead of dropped.
    **{
        f"shipped, dnc clamp trim={trim} for winsorise": _flags_then(
            f"{{name='dnc', params={{clamp=true, trim={trim}}}}}"
        )
        for trim in (2, 4)
    },
    "dnc alone (no flags, no feedback)": _no_feedback("{name='dnc'}"),
    # Fifth tuning: a row's alignment taken with the sum of the other rows, where the
    # round's common direction adds up, instead of its median cosine with each of them.
    "shipped, sum alignment": _shipped("{reference='sum'}"),
    "shipped, sum alignment d=0.2": _shipped("{reference='sum', drift=0.2}"),
    # The other rows as unit vectors, colluders sending one update counted once.
    "shipped, crowd alignment": _shipped("{reference='crowd'}"),
    **{
        f"shipped, crowd alignment d={drift}": _shipped(f"{{reference='crowd', drift={drift}}}")
        for drift in (0.2, 0.3, 0.4)
    },
    # Faster flags, kept off honest rare-class rows by pointing clearly away this round.
    "shipped, crowd alignment d=0.2 max_cosine=-0.2": _shipped(
        "{reference='crowd', drift=0.2, max_cosine=-0.2}"
    ),
    "shipped, crowd alignment d=0.1 max_cosine=-0.3": _shipped(
        "{reference='crowd', drift=0.1, max_cosine=-0.3}"
    ),
    "shipped, crowd alignment d=0.3 t=0.5": _shipped(
        "{reference='crowd', drift=0.3, threshold=0.5}"
    ),
    # Sixth tuning (after the probation fix): the drift again, a ceiling on S so that a
    # probe is judged on its own shortfall, and a shorter cap on the doubling cool-down.
    **{
        f"shipped, crowd alignment d={drift} ceiling={ceiling}": _shipped(
            f"{{reference='crowd', drift={drift}, ceiling={ceiling}}}"
        )
        for drift in (0.2, 0.3, 0.35)
        for ceiling in (1.0, 1.5)
    },
    "shipped, crowd alignment d=0.35": _shipped("{reference='crowd', drift=0.35}"),
    # A colluder judged against the rows outside its crowd, not lifted by its own crowd.
    **{
        f"shipped, crowd apart d={drift}": _shipped(
            f"{{reference='crowd', leave_out_crowd=true, drift={drift}}}"
        )
        for drift in (0.3, 0.35, 0.4)
    },
    **{
        f"shipped, crowd apart d={drift} ceiling=1.0": _shipped(
            f"{{reference='crowd', leave_out_crowd=true, drift={drift}, ceiling=1.0}}"
        )
        for drift in (0.35, 0.4)
    },
    # The shortfall in spreads of the round's crowd alignments: a wider honest spread (more
    # heterogeneous data) tolerates more.
    **{
        f"shipped, crowd relative d={drift} t={threshold}": _shipped(
            f"{{reference='crowd', relative=true, drift={drift}, threshold={threshold}}}"
        )
        for drift, threshold in ((0.75, 2.0), (1.0, 2.0), (1.0, 3.0), (1.25, 3.0))
    },
    "shipped, crowd alignment d=0.3 max cooldown 4": _shipped(
        "{reference='crowd', drift=0.3}", "consensus=0.5", "health.max_cooldown_rounds=4"
    ),
    "centered_clipping alone": _no_feedback(""),
}
CANDIDATES = {name: [_COOLDOWN_3, *overrides] for name, overrides in CANDIDATES.items()}
# The candidate src/phalanx/scenarios/robust.toml ships (a test holds the two together).
SHIPPED = "shipped, crowd alignment d=0.3"

# (partition, Byzantine fraction, attack): the clean runs measure what flags and defences
# cost honest clients; the 30% attacks are the cases the first default lost; the backdoor at
# 20% is the one issue 13 asks a defence for (success <= 20%).
SCENARIOS: list[tuple[str, float, str]] = [
    ("iid", 0.0, CLEAN),
    ("dirichlet0.5", 0.0, CLEAN),
    ("dirichlet0.3", 0.0, CLEAN),
    ("dirichlet0.1", 0.0, CLEAN),
    ("dirichlet0.5", 0.3, "sign_flip"),
    ("dirichlet0.5", 0.3, "ipm ε=5"),
    ("dirichlet0.5", 0.3, "min_max"),
    ("dirichlet0.5", 0.2, "backdoor"),
]
# ``--check``: every model attack at 20% on Dirichlet 0.5, and sign flip and ALIE at IID, so
# that a defence chosen on SCENARIOS is seen not to break the others (tuning seeds still).
CHECKS: list[tuple[str, float, str]] = [
    ("iid", 0.2, "sign_flip"),
    ("iid", 0.2, "alie"),
    *(("dirichlet0.5", 0.2, attack) for attack in ATTACKS if attack != "backdoor"),
]


# ``--set heterogeneity``: where the held-out report failed (Dirichlet 0.3 and 0.1 at 20%,
# and clean), with the cells a fix must keep (30% at Dirichlet 0.5, the backdoor at 20%).
HETEROGENEITY: list[tuple[str, float, str]] = [
    ("dirichlet0.3", 0.0, CLEAN),
    ("dirichlet0.1", 0.0, CLEAN),
    ("dirichlet0.3", 0.2, "sign_flip"),
    ("dirichlet0.1", 0.2, "ipm"),
    ("dirichlet0.1", 0.2, "alie z=1.5"),
    ("dirichlet0.1", 0.2, "min_max"),
    ("dirichlet0.1", 0.2, "scaling"),
    ("dirichlet0.5", 0.0, CLEAN),
    ("dirichlet0.5", 0.3, "sign_flip"),
    ("dirichlet0.5", 0.3, "ipm ε=5"),
    ("dirichlet0.5", 0.3, "min_max"),
    ("dirichlet0.5", 0.2, "backdoor"),
]
# ``--set sign_flip``: the heterogeneity cells and sign flipping at 20% on Dirichlet 0.5, the
# attack behind four of the second held-out report's failures.
SIGN_FLIP = [*HETEROGENEITY, ("dirichlet0.5", 0.2, "sign_flip")]
# ``--set mimic``: every colluder copying one honest update, where the held-out report's
# honest clients lost the most rounds outside clean Dirichlet 0.1 (the sixth tuning).
MIMIC: list[tuple[str, float, str]] = [
    ("dirichlet0.5", 0.2, "mimic"),
    ("dirichlet0.3", 0.2, "mimic"),
    ("dirichlet0.1", 0.2, "mimic"),
    ("dirichlet0.5", 0.3, "mimic"),
]
SETS = {
    "main": SCENARIOS,
    "check": CHECKS,
    "heterogeneity": HETEROGENEITY,
    "sign_flip": SIGN_FLIP,
    "mimic": MIMIC,
}


def run(candidate: str, scenario: tuple[str, float, str], seed: int) -> dict[str, Any]:
    """One run of ``candidate`` on ``scenario``: the cell and its outcome, as JSON."""
    partition, fraction, attack = scenario
    cell = Cell("digits", partition, fraction, attack, DEFAULT, seed)
    outcome = run_cell(cell, CANDIDATES[candidate])
    return {"candidate": candidate, "cell": asdict(cell), "outcome": asdict(outcome)}


def key(candidate: str, scenario: tuple[str, float, str], seed: int) -> str:
    return "|".join(map(str, (candidate, *scenario, seed)))


def table(
    candidate: str,
    runs: dict[str, dict[str, Any]],
    seeds: list[int],
    scenarios: list[tuple[str, float, str]],
) -> Table:
    """Per scenario: accuracy per seed, backdoor success, rounds discarded, honest flags and
    the worst share of honest client-rounds lost."""
    out = Table(title=f"{candidate} (tuning seeds {', '.join(map(str, seeds))})")
    for column in ("scenario", "accuracy %", "backdoor %", "discarded", "honest flags",
                   "honest lost %"):  # fmt: skip
        out.add_column(column, justify="right")
    for scenario in scenarios:
        found = [runs[k] for s in seeds if (k := key(candidate, scenario, s)) in runs]
        if not found:
            continue
        outcomes = [item["outcome"] for item in found]
        out.add_row(
            f"{scenario[0]} {scenario[1]:.0%} {scenario[2]}",
            " / ".join(f"{100 * o['accuracy']:.1f}" for o in outcomes),
            " / ".join(
                f"{100 * o['backdoor_asr']:.1f}" for o in outcomes if o["backdoor_asr"] is not None
            ),
            str(sum(o["rounds_failed"] for o in outcomes)),
            f"{statistics.mean(o['honest_flagged'] for o in outcomes):.0f}",
            f"{100 * max(o['honest_rounds_lost_share'] for o in outcomes):.2f}",
        )
    return out


def summary(
    candidates: list[str],
    runs: dict[str, dict[str, Any]],
    seeds: list[int],
    scenarios: list[tuple[str, float, str]],
) -> list[str]:
    """One markdown table for all ``candidates`` (what docs/byzantine_tuning.md shows): per
    scenario the mean accuracy % over the seeds that ran ("-" for none), the backdoor's
    success per seed, and the largest share of honest client-rounds any of a candidate's
    runs lost to flags."""
    names = [f"{p.replace('dirichlet', 'D')} {f:.0%} {a}" for p, f, a in scenarios]
    lines = [
        "| candidate | " + " | ".join(names) + " | backdoor success % | honest lost (worst run) |",
        "|---" * (len(names) + 3) + "|",
    ]
    for candidate in candidates:
        cells, backdoor, lost = [], "", 0.0
        for scenario in scenarios:
            found = [
                runs[k]["outcome"] for s in seeds if (k := key(candidate, scenario, s)) in runs
            ]
            if not found:
                cells.append("-")
                continue
            cells.append(f"{100 * statistics.mean(o['accuracy'] for o in found):.1f}")
            lost = max(lost, *(o["honest_rounds_lost_share"] for o in found))
            rates = [o["backdoor_asr"] for o in found if o["backdoor_asr"] is not None]
            if rates and scenario[2] == "backdoor":
                backdoor = " / ".join(f"{100 * r:.1f}" for r in rates)
        lines.append(
            f"| {candidate} | " + " | ".join(cells) + f" | {backdoor} | {100 * lost:.2f}% |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(TUNING_SEEDS))
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "docs/byzantine_tuning.json")
    parser.add_argument("--check", action="store_true", help="run CHECKS, not SCENARIOS")
    parser.add_argument("--set", choices=list(SETS), default=None, help="scenarios to run")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (processes)")
    parser.add_argument(
        "--summary", action="store_true", help="one markdown table of means, not a table each"
    )
    args = parser.parse_args()
    scenarios = SETS[args.set or ("check" if args.check else "main")]
    torch.set_num_threads(1)
    console = Console(width=120)
    runs: dict[str, dict[str, Any]] = (
        json.loads(args.results.read_text()) if args.results.exists() else {}
    )
    todo = [
        (candidate, scenario, seed)
        for candidate in args.candidates
        for scenario in scenarios
        for seed in args.seeds
        if key(candidate, scenario, seed) not in runs
    ]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for job, result in zip(todo, pool.map(run, *zip(*todo, strict=True)), strict=True):
            runs[key(*job)] = result
            args.results.write_text(json.dumps(runs, indent=1) + "\n")
    if args.summary:
        print("\n".join(summary(args.candidates, runs, args.seeds, scenarios)))
        return
    for candidate in args.candidates:
        console.print(table(candidate, runs, args.seeds, scenarios))


if __name__ == "__main__":
    main()
