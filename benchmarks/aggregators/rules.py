"""The rules the aggregator benchmark times, each written once per contender side by side,
with the parameters that make them the same rule.

Matching (the choices are also printed under the table):

- ``f = floor((n - 3) / 4)``, the largest f with Bulyan's n >= 4f + 3, used by every rule
  (n = 10, 50, 100 -> f = 1, 11, 24), so one f serves every row.
- Trimmed mean drops f values at each end. Flower takes a proportion and cuts
  ``int(p * n)``; ``p = (f + 0.5) / n`` makes that exactly f whatever the float rounding.
- Multi-Krum averages the m = n - f best-scored rows (ByzFL's fixed choice, our default,
  Flower's ``to_keep``). Inputs carry equal weights: ByzFL takes no weights, and Flower
  and we weight by example counts, so equal counts make the three compute the same mean.
- Geometric median: ``GM_ITERATIONS`` Weiszfeld steps, smoothing ``GM_NU`` on both sides;
  ours with ``tol = 0`` (it stops early only when the objective no longer decreases).
  ByzFL starts from 0 and we from the mean, so the two agree only once both have
  converged, which they have after 10 steps on these inputs.
- Centred clipping: ``CC_ITERATIONS`` steps from zero (ByzFL's ``m=None``; ours with
  ``momentum = false``), radius tau = the inputs' median row norm.
- Pre-aggregation steps are timed in front of the plain mean, so a row measures the step:
  NNM (f), static clipping (threshold = the median row norm), adaptive clipping (ARC, f)
  and bucketing (``BUCKET_SIZE``, which divides every n, so the mean of the bucket means
  is the mean whatever the shuffle and the outputs are comparable).

Peers that modify their input in place (ByzFL's Clipping and ARC, Flower's clipping) are
handed a fresh copy made outside the timed call; so is a fresh ByzFL ``CenteredClipping``,
which otherwise keeps its last result as the next call's start.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from benchmarks.aggregators.peers import Loaded

GM_ITERATIONS = 10
GM_NU = 1e-6
CC_ITERATIONS = 3
BUCKET_SIZE = 2
LAYERS = 4  # Flower sees each update as this many layers (views of one row)
AGREE = 1e-4  # outputs agree where |ours - peer| <= AGREE * max(1, max |ours|)

Array = npt.NDArray[np.float32]
Thunk = Callable[[], object]
Factory = Callable[["Inputs", str], Thunk]  # (inputs, format) -> the call to time
Cost = Callable[[int, int, int], float]  # (n, d, f) -> relative work or bytes


def tolerated(n: int) -> int:
    """f for n clients: the largest with n >= 4f + 3 (Bulyan's bound, the strictest)."""
    return (n - 3) // 4


@dataclass(frozen=True)
class Inputs:
    """One (n, d) problem in each contender's format; built once, shared, never written."""

    n: int
    d: int
    f: int
    x: Array  # n x d float32, C order
    t: torch.Tensor  # the same memory as x
    weights: torch.Tensor  # n ones
    results: list[tuple[list[Array], int]]  # Flower's (NDArrays, num_examples), views of x
    radius: float  # the median row norm: clipping threshold and centred clipping's tau


def make_inputs(n: int, d: int, seed: int) -> Inputs:
    """Honest rows ``g + 0.5 z`` around a shared direction g, and f Byzantine rows ``-5 g``
    (a scaled sign flip), placed last."""
    rng = np.random.default_rng((seed, n, d))  # plain numpy: the peers' side has no phalanx
    centre = rng.standard_normal(d, dtype=np.float32)
    x = centre + np.float32(0.5) * rng.standard_normal((n, d), dtype=np.float32)
    f = tolerated(n)
    x[n - f :] = np.float32(-5.0) * centre
    x.flags.writeable = False
    cuts = np.linspace(0, d, LAYERS + 1).astype(int)
    results = [([row[a:b] for a, b in itertools.pairwise(cuts)], 1) for row in x]
    radius = float(np.median(np.linalg.norm(x.astype(np.float64), axis=1)))
    t = torch.from_numpy(x.copy())  # torch warns on read-only arrays; a copy it may own
    return Inputs(n, d, f, x, t, torch.ones(n), results, radius)


def vectors(inputs: Inputs, fmt: str, *, copy: bool = False) -> Any:
    """The stack as ByzFL takes it: a numpy array or a torch tensor (a fresh copy on request)."""
    if fmt == "numpy":
        return inputs.x.copy() if copy else inputs.x
    return inputs.t.clone() if copy else inputs.t


def fresh_results(inputs: Inputs) -> list[tuple[list[Array], int]]:
    return [([layer.copy() for layer in layers], count) for layers, count in inputs.results]


def linear(n: int, d: int, f: int) -> float:
    return float(n * d)


def pairwise(n: int, d: int, f: int) -> float:
    return float(n * n * d)


def repeated_krum(n: int, d: int, f: int) -> float:
    """Flower's Bulyan: n - 2f Krum passes, each recomputing all distances of what is left."""
    return float(sum(k * k for k in range(2 * f + 1, n + 1)) * d)


def copies(count: float) -> Cost:
    return lambda n, d, f: count * 4 * n * d


@dataclass(frozen=True)
class PeerCall:
    """A peer's version of a rule (``factory``), or None with the reason in ``note``.
    ``cost`` scales a measured time to a larger case; ``memory`` bounds the bytes it holds."""

    factory: Factory | None
    note: str = ""
    cost: Cost = linear
    memory: Cost = field(default=copies(4))


@dataclass(frozen=True)
class Rule:
    """A rule's peer versions; ours is built from ``ours.OURS[label]`` in phalanx's process."""

    label: str
    byzfl: PeerCall
    flower: PeerCall


def absent(peer: str, what: str) -> PeerCall:
    return PeerCall(None, f"{peer} has no {what}")


def rules(byzfl: Loaded, flower: Loaded) -> list[Rule]:
    """Every benchmarked rule; a peer that is not loaded contributes no factories."""
    # Untyped foreign modules; None when the peer is not loaded, and then never called.
    agg: Any = byzfl.modules.get("aggregators")
    pre: Any = byzfl.modules.get("preaggregators")
    fl: Any = flower.modules.get("aggregate")
    dp: Any = flower.modules.get("dp")

    def bz(make: Callable[[Inputs, Any], object], **kw: Any) -> PeerCall:
        return PeerCall(lambda i, fmt: lambda: make(i, vectors(i, fmt)), **kw)

    def bz_copy(make: Callable[[Inputs, Any], object]) -> PeerCall:
        def factory(i: Inputs, fmt: str) -> Thunk:
            fresh = vectors(i, fmt, copy=True)
            return lambda: make(i, fresh)

        return PeerCall(factory, "input copied before the call (modified in place)")

    def fw(make: Callable[[Inputs], object], **kw: Any) -> PeerCall:
        return PeerCall(lambda i, fmt: lambda: make(i), **kw)

    def flower_clipping(i: Inputs, fmt: str) -> Thunk:
        fresh = fresh_results(i)

        def run() -> object:
            for layers, _ in fresh:
                dp.clip_inputs_inplace(layers, i.radius)
            return fl.aggregate(fresh)

        return run

    def byzfl_centered_clipping(i: Inputs, fmt: str) -> Thunk:
        rule = agg.CenteredClipping(None, CC_ITERATIONS, i.radius)
        v = vectors(i, fmt)
        return lambda: rule(v)

    return [
        Rule(
            "fedavg",
            bz(lambda i, v: agg.Average()(v)),
            fw(lambda i: fl.aggregate(i.results)),
        ),
        Rule(
            "median",
            bz(lambda i, v: agg.Median()(v)),
            fw(lambda i: fl.aggregate_median(i.results)),
        ),
        Rule(
            "trimmed_mean",
            bz(lambda i, v: agg.TrMean(i.f)(v)),
            fw(lambda i: fl.aggregate_trimmed_avg(i.results, (i.f + 0.5) / i.n)),
        ),
        Rule(
            "krum",
            bz(lambda i, v: agg.Krum(i.f)(v), cost=pairwise),
            fw(lambda i: fl.aggregate_krum(i.results, i.f, 0), cost=pairwise),
        ),
        Rule(
            "multi_krum",
            bz(lambda i, v: agg.MultiKrum(i.f)(v), cost=pairwise),
            fw(lambda i: fl.aggregate_krum(i.results, i.f, i.n - i.f), cost=pairwise),
        ),
        Rule(
            "bulyan",
            absent("ByzFL", "Bulyan"),
            fw(
                lambda i: fl.aggregate_bulyan(list(i.results), i.f, fl.aggregate_krum, to_keep=0),
                cost=repeated_krum,
            ),
        ),
        Rule(
            "geometric_median",
            bz(lambda i, v: agg.GeometricMedian(GM_NU, GM_ITERATIONS)(v)),
            absent("Flower", "geometric median"),
        ),
        Rule(
            "centered_clipping",
            PeerCall(byzfl_centered_clipping, "a fresh instance per call (it keeps state)"),
            absent("Flower", "centred clipping"),
        ),
        Rule(
            "nnm > mean",
            bz(
                lambda i, v: agg.Average()(pre.NNM(i.f)(v)),
                cost=pairwise,
                memory=lambda n, d, f: 4.0 * n * (n - f) * d + 8.0 * n * d,
            ),
            absent("Flower", "NNM"),
        ),
        Rule(
            "clipping (static) > mean",
            bz_copy(lambda i, v: agg.Average()(pre.Clipping(i.radius)(v))),
            PeerCall(flower_clipping, "fixed clipping (DP helper, no noise); copies made first"),
        ),
        Rule(
            "clipping (ARC) > mean",
            bz_copy(lambda i, v: agg.Average()(pre.ARC(i.f)(v))),
            absent("Flower", "adaptive robust clipping"),
        ),
        Rule(
            "bucketing > mean",
            bz(lambda i, v: agg.Average()(pre.Bucketing(BUCKET_SIZE)(v))),
            absent("Flower", "bucketing"),
        ),
    ]


def as_vector(output: object) -> npt.NDArray[np.float64]:
    """Any contender's result as one float64 numpy vector, for the agreement check."""
    vector = getattr(output, "vector", output)
    if isinstance(vector, torch.Tensor):
        return vector.detach().double().numpy().ravel()
    if isinstance(vector, list):  # Flower's NDArrays
        return np.concatenate([np.asarray(layer, dtype=np.float64).ravel() for layer in vector])
    return np.asarray(vector, dtype=np.float64).ravel()


def count_differing(
    ours: npt.NDArray[np.float64], theirs: npt.NDArray[np.float64], tolerance: float
) -> int:
    """Coordinates where the two outputs differ by more than ``tolerance``."""
    if ours.shape != theirs.shape:
        return int(ours.size)
    return int(np.count_nonzero(np.abs(ours - theirs) > tolerance))


def max_abs_difference(ours: npt.NDArray[np.float64], theirs: npt.NDArray[np.float64]) -> float:
    if ours.shape != theirs.shape:
        return math.inf
    return float(np.max(np.abs(ours - theirs)))
