"""The measuring half of ``aggregator_speed.py``: run in a child process
(``python -m benchmarks.aggregators.child``) whose environment
pins OpenMP/MKL/OpenBLAS to one thread before numpy or torch load, it times every contender
on every (n, d) and prints one JSON document on stdout (progress goes to stderr).

Per (n, d) the inputs are built once and shared. Per rule, every contender first makes one
warm-up call, whose output is the one compared with ours (max |ours - peer|, and how many
coordinates differ beyond a tolerance); then the contenders are timed in interleaved
rounds and each reports the median of its rounds. ByzFL is timed on a numpy array and on a
torch tensor in the first round; the faster format goes on alone. ``gc.collect()`` runs
before every call, outside its time.

A peer call is skipped, with the reason, when its time predicted from the same call on
the last smaller case exceeds ``--max-call-s``, or its memory (from its algorithm: ByzFL's
NNM builds an n x (n - f) x d array) exceeds ``--max-bytes``. A slow call gets fewer
rounds, ``min(repeats, floor(budget / warm-up time))``; one that alone outlasts the budget
is timed once, by its warm-up call.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from benchmarks.aggregators.peers import Loaded, load_byzfl, load_flower
from benchmarks.aggregators.rules import (
    AGREE,
    Inputs,
    PeerCall,
    Rule,
    Thunk,
    as_vector,
    count_differing,
    make_inputs,
    rules,
)
from benchmarks.aggregators.rules import max_abs_difference as max_diff
from phalanx.aggregation import build_aggregator
from phalanx.errors import PhalanxError

Vector = npt.NDArray[np.float64]


@dataclass
class Contender:
    """One (library, format) on one rule and size: its call, its runs, or why it has none."""

    peer: str
    fmt: str
    make: Callable[[], Thunk] | None = None  # None: skipped or failed
    note: str = ""
    warm_s: float | None = None
    runs: list[float] = field(default_factory=list)
    allowed: int = 0
    difference: float | None = None
    differing: int | None = None  # coordinates where the outputs differ beyond AGREE

    def record(self) -> dict[str, Any]:
        return {
            "format": self.fmt,
            "median_s": statistics.median(self.runs) if self.runs else None,
            "runs_s": self.runs,
            "warm_s": self.warm_s,
            "max_abs_diff": self.difference,
            "coords_differing": self.differing,
            "note": self.note,
        }


@dataclass
class History:
    """The last measured warm-up time of each (peer, format, rule), for predictions."""

    seen: dict[tuple[str, str, str], tuple[float, int, int, int]] = field(default_factory=dict)

    def predict(self, key: tuple[str, str, str], call: PeerCall, i: Inputs) -> float | None:
        if key not in self.seen:
            return None
        seconds, n, d, f = self.seen[key]
        return seconds * call.cost(i.n, i.d, i.f) / call.cost(n, d, f)

    def note(self, key: tuple[str, str, str], seconds: float, i: Inputs) -> None:
        self.seen[key] = (seconds, i.n, i.d, i.f)


def timed(thunk: Thunk) -> tuple[float, object]:
    gc.collect()
    start = time.perf_counter()
    output = thunk()
    return time.perf_counter() - start, output


def peer_contenders(
    rule: Rule,
    peer: Loaded,
    call: PeerCall,
    formats: tuple[str, ...],
    i: Inputs,
    args: Any,
    history: History,
) -> list[Contender]:
    """The peer's contenders for this case, each runnable or skipped with its reason."""
    if peer.missing:
        return [Contender(peer.name, "", note=peer.missing)]
    if call.factory is None:
        return [Contender(peer.name, "", note=call.note)]
    out = []
    for fmt in formats:
        c = Contender(peer.name, fmt, note=call.note)
        predicted = history.predict((peer.name, fmt, rule.label), call, i)
        needs = call.memory(i.n, i.d, i.f)
        if predicted is not None and predicted > args.max_call_s:
            c.note = f"skipped: predicted {predicted:.0f} s > {args.max_call_s:.0f} s"
        elif needs > args.max_bytes:
            c.note = f"skipped: needs ~{needs / 2**30:.1f} GiB > {args.max_bytes / 2**30:.0f} GiB"
        else:
            factory = call.factory
            c.make = functools.partial(factory, i, fmt)
        out.append(c)
    return out


def warm_up(c: Contender, reference: Vector | None, args: Any) -> Vector | None:
    """The first call, not among the timed rounds: its output goes to the agreement check,
    its time sets the number of rounds. A failure becomes the contender's note."""
    if c.make is None:
        return None
    try:
        c.warm_s, output = timed(c.make())
    except Exception as error:  # a peer's own error is a result to report, not a crash
        c.make, c.note = None, f"failed: {type(error).__name__}: {str(error)[:120]}"
        return None
    c.allowed = min(args.repeats, int(args.budget_s // max(c.warm_s, 1e-9)))
    if c.allowed == 0:  # one call outlasts the budget: warm-up effects are noise, keep it
        c.runs.append(c.warm_s)
        c.note = (c.note + "; " if c.note else "") + "timed once (the first call)"
    vector = as_vector(output)
    if reference is not None:
        c.difference = max_diff(reference, vector)
        tolerance = AGREE * max(1.0, float(np.max(np.abs(reference))))
        c.differing = count_differing(reference, vector, tolerance)
    return vector


def run_rounds(contenders: list[Contender], repeats: int) -> None:
    """Interleaved timed rounds; after the first, only ByzFL's faster format continues."""
    for round_index in range(repeats):
        for c in contenders:
            if c.make is not None and len(c.runs) < c.allowed:
                c.runs.append(timed(c.make())[0])
        if round_index == 0:
            timed_byzfl = [c for c in contenders if c.peer == "ByzFL" and c.runs]
            for c in sorted(timed_byzfl, key=lambda c: c.runs[0])[1:]:
                c.allowed = len(c.runs)
                c.note = (c.note + "; " if c.note else "") + "slower format: timed once"


def measure(
    rule: Rule, i: Inputs, peers: tuple[Loaded, Loaded], args: Any, history: History
) -> dict[str, Any]:
    """Warm-ups (and the agreement check against ours), then the timed rounds, of one case."""
    byzfl, flower = peers
    ours = Contender("phalanx", "torch")
    try:
        aggregator = build_aggregator(rule.ours(i))
        ours.make = lambda: functools.partial(aggregator.aggregate, i.t, i.weights)
    except PhalanxError as error:  # e.g. a renamed parameter: report it, time the peers
        ours.note = f"failed: {error}"
    contenders = [
        ours,
        *peer_contenders(rule, byzfl, rule.byzfl, ("numpy", "torch"), i, args, history),
        *peer_contenders(rule, flower, rule.flower, ("NDArrays",), i, args, history),
    ]
    reference = warm_up(ours, None, args)
    for c in contenders[1:]:
        warm_up(c, reference, args)
        if c.warm_s is not None:
            history.note((c.peer, c.fmt, rule.label), c.warm_s, i)
    run_rounds(contenders, args.repeats)
    return {
        "rule": rule.label,
        "n": i.n,
        "d": i.d,
        "f": i.f,
        "scale": None if reference is None else float(np.max(np.abs(reference))),
        "contenders": [{"peer": c.peer, **c.record()} for c in contenders],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, nargs="+", required=True)
    parser.add_argument("--d", type=int, nargs="+", required=True)
    parser.add_argument("--only", nargs="*", default=[])
    parser.add_argument("--repeats", type=int, required=True)
    parser.add_argument("--budget-s", type=float, required=True)
    parser.add_argument("--max-call-s", type=float, required=True)
    parser.add_argument("--max-bytes", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    peers = (load_byzfl(), load_flower())
    gc.collect()
    gc.freeze()  # what the imports made is never garbage; collecting before a call stays cheap
    chosen = [r for r in rules(*peers) if not args.only or r.label in args.only]
    history, cases = History(), []
    for n in sorted(args.n):
        for d in sorted(args.d):
            inputs = make_inputs(n, d, args.seed)
            for rule in chosen:
                print(f"  {rule.label} n={n} d={d:,}", file=sys.stderr, flush=True)
                cases.append(measure(rule, inputs, peers, args, history))
            del inputs
    versions = {p.name: p.version for p in peers}
    missing = {p.name: p.missing for p in peers if p.missing}
    print(json.dumps({"cases": cases, "peers": versions, "missing": missing}))


if __name__ == "__main__":
    main()
