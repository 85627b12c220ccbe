"""What a trusted root dataset on the server would buy: FLTrust on the tuning seeds.

FLTrust (Cao, Fang, Liu and Gong, NDSS 2021) gives the server a small clean "root" dataset.
Each round the server trains on it like a client; a client's trust score is
``ReLU(cos(its update, the root update))``, its update is rescaled to the root update's
norm, and the aggregate is the trust-weighted mean. It needs no f and no flags, so no
honest client is sidelined. Earlier closing notes suggested it for issue 13's Dirichlet 0.1
failures; this script measures that suggestion before anything is built for it.

Set-up, outside the shipped code: 100 examples, stratified, are carved out of the digits
training pool before the usual 20-client partition and held by a 21st client, always asked,
whose update the rule below trusts (the server's own training, run as a client). The
Byzantine clients are the 20-client benchmark's (same seed stream), so the trusted client is
never one. Every candidate, FedAvg and the shipped default included, runs on these 21
clients, behind the same validation. Tuning seeds only (``TUNING_SEEDS``): this chooses
nothing to ship, and no held-out seed is spent on it.

    .venv/bin/python -m benchmarks.byzantine.root_trust                      # about 12 minutes
    .venv/bin/python -m benchmarks.byzantine.root_trust --seeds 42 7 --candidates fltrust \\
        --attacks clean sign_flip

Candidates: ``fltrust`` as published; ``floor`` adds 0.1 to every trust score (an update
at cosine <= 0 keeps a small say, so a class only it holds is not dropped every round);
``keep norm`` clips each update to the median norm instead of rescaling it to the root's.
The rule is registered through the public registry (``RULES.register``), as a user's own
rule would be, by each run (not on import).
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch
from pydantic import Field
from torch import nn

from benchmarks.byzantine.grid import CLEAN, DEFAULT, Cell, cell_config
from benchmarks.byzantine.tuning import SCENARIOS as TUNING_SCENARIOS
from benchmarks.byzantine.tuning import TUNING_SEEDS
from phalanx.aggregation.base import Aggregate, Part, RoundContext
from phalanx.aggregation.registry import RULES
from phalanx.aggregation.rows import Rows
from phalanx.config import DigitsWorkload, build_config
from phalanx.core.named import Params
from phalanx.core.rng import numpy_rng
from phalanx.errors import AggregationError, ConfigError
from phalanx.faults.byzantine import byzantine_clients
from phalanx.workloads.base import ClientData, client_data
from phalanx.workloads.digits import CLASSES, FEATURES, _digits, partition, stratified_split

ROOT_EXAMPLES = 100
CLIENTS = 20  # the benchmark's; the trusted client is one more, with this id
TRUSTED = CLIENTS


class FLTrustParams(Params):
    trusted: int = Field(..., ge=0, description="the client whose update is the root update")
    floor: float = Field(0.0, ge=0, description="added to every other client's trust score")
    keep_norm: bool = Field(False, description="clip to the median norm, not the root's")


class FLTrust(Part[FLTrustParams]):
    """The trust-weighted mean; the trusted row itself only sets the direction and scale."""

    name = "fltrust"

    def __call__(self, rows: Rows, f: int, context: RoundContext) -> Aggregate:
        if self.params.trusted not in context.clients:
            raise AggregationError(f"fltrust: no update from trusted client {self.params.trusted}")
        x = rows.materialise().double()
        root = context.clients.index(self.params.trusted)
        norms = x.norm(dim=1).clamp(min=1e-12)
        cosines = (x @ x[root]) / (norms * norms[root])
        trust = cosines.clamp(min=0) + self.params.floor
        trust[root] = 0.0
        if float(trust.sum()) <= 0:  # nobody points the root's way: the root update alone
            return Aggregate(x[root].float())
        others = torch.ones_like(norms, dtype=torch.bool)
        others[root] = False
        if self.params.keep_norm:
            scale = (norms[others].median() / norms).clamp(max=1.0)
        else:
            scale = norms[root] / norms
        coefficients = trust * scale / trust.sum()
        rows.discard(torch.nonzero((trust == 0) & others).flatten())  # no say this round
        return Aggregate((coefficients @ x).float())


def register() -> None:
    """Add ``fltrust`` to the rules of this process (once): done by each run, not on import,
    so importing this module (a test) leaves the shipped registry as it is."""
    if "fltrust" not in RULES:
        RULES.register("fltrust", FLTrust, params=FLTrustParams, description="FLTrust")


_RULE = {"pre": [], "health_feedback": False}
CANDIDATES: dict[str, dict[str, Any] | None] = {
    "fedavg": {"name": "fedavg", "params": {}, **_RULE},
    "shipped default": None,
    "fltrust": {"name": "fltrust", "params": {"trusted": TRUSTED}, **_RULE},
    "fltrust, floor 0.1": {"name": "fltrust", "params": {"trusted": TRUSTED, "floor": 0.1},
                           **_RULE},
    "fltrust, keep norm": {"name": "fltrust", "params": {"trusted": TRUSTED, "keep_norm": True},
                           **_RULE},
    "fltrust, floor 0.1, keep norm": {
        "name": "fltrust", "params": {"trusted": TRUSTED, "floor": 0.1, "keep_norm": True},
        **_RULE,
    },
}  # fmt: skip

# The tuning's own cells, with the attacks at Dirichlet 0.1 (and 0.3) that a root set was
# suggested for put between its clean runs and its attacks.
SCENARIOS: list[tuple[str, float, str]] = [
    *(s for s in TUNING_SCENARIOS if s[2] == CLEAN),
    *(("dirichlet0.1", 0.2, a) for a in ("sign_flip", "alie z=1.5", "min_max", "ipm ε=5")),
    ("dirichlet0.1", 0.2, "scaling"),
    ("dirichlet0.3", 0.2, "sign_flip"),
    *(s for s in TUNING_SCENARIOS if s[2] != CLEAN),
]


def as_images(data: ClientData) -> ClientData:
    """Digits as 8 x 8 images (the model flattens them), so a backdoor finds its corner."""
    return ClientData(data.x.reshape(-1, 8, 8), data.y)


def image_mlp(hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, CLASSES)
    )


def with_root(workload: DigitsWorkload, seed: int) -> tuple[list[ClientData], ClientData]:
    """(21 clients, the last holding the root set; the test set): the digits split of
    ``build_digits``, with ``ROOT_EXAMPLES`` stratified examples taken out before the
    partition."""
    x, y = _digits()
    train, test = stratified_split(y, workload.test_fraction,
                                   numpy_rng(seed, "workload.digits.split"))  # fmt: skip
    rest, root = stratified_split(y[train], ROOT_EXAMPLES / len(train), numpy_rng(seed, "root"))
    rest, root = train[rest], train[root]
    parts = partition(y[rest], num_clients=CLIENTS, alpha=workload.dirichlet_alpha,
                      min_samples=workload.min_samples, seed=seed)  # fmt: skip
    clients = [*(client_data(x[rest[p]], y[rest[p]]) for p in parts), client_data(x[root], y[root])]
    return [as_images(c) for c in clients], as_images(client_data(x[test], y[test]))


def run(candidate: str, scenario: tuple[str, float, str], seed: int) -> dict[str, Any]:
    from phalanx.simulation import Simulation

    torch.set_num_threads(1)
    register()
    part, fraction, attack = scenario
    config, _, _ = cell_config(Cell("digits", part, fraction, attack, DEFAULT, seed), [])
    tree = config.model_dump(mode="json")
    # The 20-client benchmark's attackers, never the trusted client.
    bad = (
        frozenset()
        if attack == CLEAN
        else byzantine_clients(config.faults.byzantine, CLIENTS, seed)
    )
    if bad:
        tree["faults"]["byzantine"] |= {"clients": sorted(bad), "fraction": 0.0}
    rule = CANDIDATES[candidate]
    if rule is not None:
        keep = {k: tree["aggregation"][k] for k in ("f", "memory_budget_bytes")}
        tree["aggregation"] = {**rule, **keep}
    tree["workload"]["num_clients"] = tree["selection"]["clients_per_round"] = CLIENTS + 1
    config = build_config(tree)
    if not isinstance(config.workload, DigitsWorkload):
        raise ConfigError(f"root_trust runs on digits, not {config.workload.name!r}")
    clients, test = with_root(config.workload, config.seed)
    make_model = functools.partial(image_mlp, config.workload.hidden)
    result = Simulation(config, model=make_model, clients=clients, test=test).run()
    metrics = result.history[-1].get("metrics", {})
    others = bad | {TRUSTED}  # not the honest clients judged
    discarded = (c for record in result.history for c in record.get("discarded", []))
    accepted = (c for record in result.history for c in record["accepted"])
    honest_ignored = sum(1 for c in discarded if c not in others) / max(
        1, sum(1 for c in accepted if c not in others)
    )
    return {
        "accuracy": float(metrics.get("accuracy", math.nan)),
        "backdoor": metrics.get("backdoor_asr"),
        "honest_ignored": honest_ignored,
    }


def _job(args: tuple[str, tuple[str, float, str], int]) -> tuple[Any, dict[str, Any]]:
    return args, run(*args)


def cell_text(runs: list[dict[str, Any]]) -> str:
    mean = 100 * statistics.mean(r["accuracy"] for r in runs)
    text = f"{mean:.1f} (min {100 * min(r['accuracy'] for r in runs):.1f})"
    if runs[0]["backdoor"] is not None:
        text += f", backdoor {100 * statistics.mean(r['backdoor'] for r in runs):.1f}%"
    return text


def table(results: dict[Any, list[dict[str, Any]]], candidates: list[str],
          scenarios: list[tuple[str, float, str]]) -> Iterator[str]:  # fmt: skip
    yield "| scenario | " + " | ".join(candidates) + " |"
    yield "|---|" + "---|" * len(candidates)
    for scenario in scenarios:
        part, fraction, attack = scenario
        cells = [cell_text(results[(c, scenario)]) for c in candidates]
        yield f"| {part} {round(100 * fraction)}% {attack} | " + " | ".join(cells) + " |"
    ignored = [max(r["honest_ignored"] for k, rs in results.items() if k[0] == c for r in rs)
               for c in candidates]  # fmt: skip
    shares = " | ".join(f"{100 * share:.1f}%" for share in ignored)
    yield f"| honest updates given no say, worst run | {shares} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(TUNING_SEEDS))
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES),
                        choices=list(CANDIDATES))  # fmt: skip
    parser.add_argument("--attacks", nargs="+", help="only scenarios with these attacks")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    scenarios = [s for s in SCENARIOS if not args.attacks or s[2] in args.attacks]
    jobs = [(c, s, seed) for s in scenarios for c in args.candidates for seed in args.seeds]
    results: dict[Any, list[dict[str, Any]]] = {}
    with ProcessPoolExecutor(args.jobs) as pool:
        for (candidate, scenario, _), outcome in pool.map(_job, jobs):
            results.setdefault((candidate, scenario), []).append(outcome)
    print(f"seeds {', '.join(map(str, args.seeds))}; accuracy % mean over seeds (lowest seed)")
    print("\n".join(table(results, args.candidates, scenarios)))


if __name__ == "__main__":
    main()
